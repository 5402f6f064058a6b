"""Client configuration: a TOML file, overridden by the environment, overridden by flags.

File: `$AILURO_CONFIG`, else `$XDG_CONFIG_HOME/ailuro/config.toml` (`~/.config/ailuro/config.toml`)::

    url = "https://ailuro.example.org"
    token_file = "~/.config/ailuro/token"   # the default
    timeout = 60
    ca_bundle = "/etc/ssl/certs/site-ca.pem"  # optional

Environment: `AILURO_URL`, `AILURO_TOKEN_FILE`, `AILURO_TOKEN` (the token itself, for CI jobs),
`AILURO_TIMEOUT`, `AILURO_CA_BUNDLE`. The token is read from a file so it never shows up in shell
history or `ps`; the file should be readable by its owner only.
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file or variable."""


@dataclass(frozen=True)
class ClientConfig:
    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = 60.0
    verify: bool | str = True
    source: str = "defaults"


def _config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "ailuro"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def _read_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path}: cannot read ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"ailuro: warning: token file {path} is readable by others; chmod 600 it", file=sys.stderr)
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


def config_load(
    *, env: Mapping[str, str] | None = None, url: str | None = None, token_file: str | None = None
) -> ClientConfig:
    """Defaults < config file < environment < explicit arguments (the CLI's flags)."""
    env = os.environ if env is None else env
    explicit = env.get("AILURO_CONFIG")
    path = Path(explicit).expanduser() if explicit else _config_dir(env) / "config.toml"
    data: dict[str, Any] = {}
    source = "defaults"
    if path.exists():
        data = _read_toml(path)
        source = str(path)
    elif explicit:
        raise ConfigError(f"AILURO_CONFIG names {path}, which does not exist")
    unknown = sorted(set(data) - {"url", "token_file", "timeout", "ca_bundle"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: url, token_file, timeout, ca_bundle)")

    resolved_url = url or env.get("AILURO_URL") or data.get("url") or DEFAULT_URL
    if not isinstance(resolved_url, str) or not resolved_url.startswith(("http://", "https://")):
        raise ConfigError(f"the server URL must start with http:// or https://, got {resolved_url!r}")

    raw_timeout = env.get("AILURO_TIMEOUT") or data.get("timeout") or 60
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"timeout must be a number of seconds, got {raw_timeout!r}") from None

    ca_bundle = env.get("AILURO_CA_BUNDLE") or data.get("ca_bundle")
    verify: bool | str = str(Path(ca_bundle).expanduser()) if ca_bundle else True

    token = env.get("AILURO_TOKEN") or None
    if token is None:
        chosen = token_file or env.get("AILURO_TOKEN_FILE") or data.get("token_file")
        token_path = Path(chosen).expanduser() if chosen else _config_dir(env) / "token"
        if chosen or token_path.exists():
            token = _read_token(token_path)
    return ClientConfig(
        url=resolved_url.rstrip("/"), token=token, timeout=timeout, verify=verify, source=source
    )
