from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"} and not k.startswith("OIDC_")
    }
    base["AILURO_DATA_DIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OIDC_ROLE_GROUPS": "atlas"}, "OIDC_ROLE_GROUPS"),
        ({"OIDC_ALGORITHMS": "HS256"}, "OIDC_ALGORITHMS"),
        ({"OIDC_ALGORITHMS": "none"}, "OIDC_ALGORITHMS"),
        ({"OIDC_TIMEOUT": "0"}, "OIDC_TIMEOUT"),
        ({"AILURO_BODY_CAPS": "/api/v1/pilot/=lots"}, "AILURO_BODY_CAPS"),
        ({"OIDC_ISSUER": "https://iam.example.org", "OIDC_ROLE_GROUPS": "atlas=king"}, "ailuro.E010"),
        ({"OIDC_ISSUER": "https://iam.example.org"}, "ailuro.E012"),
    ],
)
def test_bad_identity_configuration_stops_start_up_naming_it(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = _check(tmp_path, **env)

    assert result.returncode != 0
    assert named in result.stderr


def test_oidc_unset_is_the_embedded_default_and_checks_clean(tmp_path: Path) -> None:
    result = _check(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
