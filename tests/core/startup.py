"""Start Django in a subprocess the way every process does (`manage.py check`), with a clean
environment: no database URL, settings module, OIDC variables or the browser tests'
DJANGO_ALLOW_ASYNC_UNSAFE leak in from the test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage_check(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
        and not k.startswith("OIDC_")
    }
    base["AILURO_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
