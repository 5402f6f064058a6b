from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.startup import manage_check


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
    result = manage_check(tmp_path, **env)

    assert result.returncode != 0
    assert named in result.stderr


def test_oidc_unset_is_the_embedded_default_and_checks_clean(tmp_path: Path) -> None:
    result = manage_check(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
