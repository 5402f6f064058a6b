"""The deployment checks: the container files, the compose file, the Helm chart, the systemd units
and the nginx example, each run through a real linter or validator (scripts/deploy-tools.sh
installs them into var/deploy-tools; nothing is downloaded while the checks run). Every check has a
twin that plants an error into a copy and expects the tool to fail, so a check that cannot fail
shows up as a failing test."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.workers import install_lock

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="session")
def tools() -> Path:
    """The folder of the check tools, installed (or found installed) by scripts/deploy-tools.sh."""
    with install_lock("deploy-tools"):
        subprocess.run([str(ROOT / "scripts" / "deploy-tools.sh"), "install"], check=True, timeout=900)
    return ROOT / "var" / "deploy-tools" / "bin"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first check of a fresh machine also installs the tools (about two minutes)."""
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(900))


def run(argv: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    """Run a tool; never raises on its exit code (the tests look at it)."""
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False)


def planted(tmp_path: Path, source: Path, old: str, new: str, name: str | None = None) -> Path:
    """A copy of `source` with `old` replaced by `new` (which must occur: a plant that misses its
    target would make the failing twin pass for the wrong reason)."""
    text = source.read_text()
    assert old in text, f"{old!r} is not in {source}"
    copy = tmp_path / (name or source.name)
    copy.write_text(text.replace(old, new, 1))
    return copy
