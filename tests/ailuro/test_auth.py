from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from ailuro.auth import LoginError, bearer_token, token_file_path, token_file_read, token_file_write


def test_a_token_file_is_private_even_when_an_old_one_was_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("{}")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        token_file_write(path, {"access_token": "a", "expires_at": 1})
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_file_read(path)["access_token"] == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["token.json"]  # no temporary file left behind


def test_the_token_file_location_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AILURO_TOKEN_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert token_file_path() == tmp_path / "ailuro" / "token.json"
    monkeypatch.setenv("AILURO_TOKEN_FILE", str(tmp_path / "x.json"))
    assert token_file_path() == tmp_path / "x.json"
    assert token_file_path("/explicit") == Path("/explicit")


def test_a_fresh_token_is_returned_without_calling_the_provider(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    token_file_write(path, {"access_token": "fresh", "expires_at": int(time.time()) + 3600})

    assert bearer_token(path) == "fresh"


def test_an_expiring_token_without_refresh_token_asks_for_a_login(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    token_file_write(path, {"access_token": "old", "expires_at": int(time.time()) + 10})

    with pytest.raises(LoginError, match="run `ailuro login` again"):
        bearer_token(path)
    (tmp_path / "bad.json").write_text("nope")
    with pytest.raises(LoginError, match="not a token file"):
        token_file_read(tmp_path / "bad.json")
