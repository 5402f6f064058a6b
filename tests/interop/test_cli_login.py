"""`ailuro login` against the real provider and a live ailuro server: device flow, 0600 token
file, the server accepting the token, refresh."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop.oidc_provider import OidcProvider

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _ailuro(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ailuro.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_device_flow_login_saves_a_private_token_the_server_accepts_and_refresh_renews_it(
    transactional_db: None, live_server: Any, oidc_server: OidcProvider, tmp_path: Path
) -> None:
    token_file = tmp_path / "cfg" / "token.json"
    cli = _ailuro("login", "--server", live_server.url, "--token-file", str(token_file))
    try:
        assert cli.stdout is not None
        prompt = cli.stdout.readline()
        match = re.search(r"open (\S+) and enter the code (\S+)", prompt)
        assert match, prompt
        oidc_server.device_approve(match.group(1), match.group(2), "alice")
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()

    assert cli.returncode == 0, err
    assert f"logged in to {live_server.url} as alice (roles: operator, reader, user)" in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    first = json.loads(token_file.read_text())
    assert first["access_token"].count(".") == 2  # a JWT for the API audience
    assert first["refresh_token"]

    renewed = _ailuro("login", "--refresh", "--server", live_server.url, "--token-file", str(token_file))
    out, err = renewed.communicate(timeout=60)

    assert renewed.returncode == 0, err
    assert "as alice" in out
    second = json.loads(token_file.read_text())
    assert second["access_token"] != first["access_token"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_login_without_a_provider_says_what_to_give(tmp_path: Path) -> None:
    cli = _ailuro("login", "--token-file", str(tmp_path / "t.json"), env={"PATH": "/usr/bin:/bin"})
    out, err = cli.communicate(timeout=60)

    assert cli.returncode == 1
    assert "give --server, or --issuer and --client-id" in err
    assert not (tmp_path / "t.json").exists()


def test_refresh_without_a_token_file_asks_for_a_login(tmp_path: Path) -> None:
    cli = _ailuro("login", "--refresh", "--token-file", str(tmp_path / "none.json"))
    out, err = cli.communicate(timeout=60)

    assert cli.returncode == 1
    assert "not logged in" in err
