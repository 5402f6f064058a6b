"""Where the client commands find their server and token."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ailuro.config import config_load


def test_a_login_token_file_is_used_by_the_client_commands(tmp_path: Path) -> None:
    folder = tmp_path / "ailuro"
    folder.mkdir()
    login_file = folder / "token.json"
    login_file.write_text(json.dumps({"access_token": "jwt-from-login", "expires_at": time.time() + 3600}))
    login_file.chmod(0o600)

    config = config_load(env={"XDG_CONFIG_HOME": str(tmp_path)})

    assert config.token == "jwt-from-login"


def test_a_plain_token_file_wins_over_the_login_file(tmp_path: Path) -> None:
    folder = tmp_path / "ailuro"
    folder.mkdir()
    (folder / "token").write_text("ail_plain\n")
    (folder / "token").chmod(0o600)
    (folder / "token.json").write_text(json.dumps({"access_token": "jwt", "expires_at": time.time() + 3600}))

    assert config_load(env={"XDG_CONFIG_HOME": str(tmp_path)}).token == "ail_plain"
