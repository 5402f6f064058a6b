"""The monitor's read tests (tests/pandamon/) once more on SQLite, the embedded run's database.

The suite runs on PostgreSQL; each monitor aggregate has one read per database, the rollup read
on PostgreSQL and plain ORM GROUP BYs on SQLite (pandamon/queries/). Running the same fixtures and
assertions on SQLite in a subprocess (the database is chosen at settings import) checks the SQLite
reads: tests/pandamon/test_scans_agree.py recounts each aggregate in Python, the page tests pin
content and query counts (`conftest.pinned`). The browser test and the rollups (PostgreSQL only)
stay out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_monitor_read_tests_pass_on_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'reads.sqlite3'}"
    env["AILURO_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(  # noqa: S603  (our own test run)
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/pandamon",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ignore=tests/pandamon/test_browser.py",
            "--ignore=tests/pandamon/test_rollups.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
