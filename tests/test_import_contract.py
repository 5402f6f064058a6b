"""The import contract of pyproject.toml ([tool.importlinter]), checked by import-linter: apps import
only downwards (docs/architecture.md#apps-and-layers), dispatcher's modules form no cycle, and the
pilot and CLI package imports nothing of the server. The check reads the source, so an import
inside a function or under TYPE_CHECKING counts as much as one at the top of a module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the packages under `root` (no cache: nothing is written there)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_checkout_keeps_the_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_of_the_checkout_is_under_the_contract() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    missing = packages - set(CONFIG["root_packages"])
    assert not missing, f"add {sorted(missing)} to root_packages (and its layer) in pyproject.toml"


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("core/leases.py", "import pandamon.charts", "core is not allowed to import pandamon"),
        (
            "dispatcher/states.py",
            "from dispatcher.services import dispatch",
            "No cycles are allowed in dispatcher",
        ),
        ("ailuro/protocol.py", "import django.conf", "ailuro is not allowed to import django"),
    ],
    ids=["upward-import", "dispatcher-cycle", "ailuro-imports-django"],
)
def test_a_planted_violation_breaks_the_contract(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    """The contract can fail: a copy of the packages with one bad import added inside a function
    (the hardest place to see it) does not pass."""
    for package in CONFIG["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n\ndef _planted() -> None:\n    {planted}  # noqa\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    assert broken in " ".join(result.stdout.split()), result.stdout
