"""`ailuro login`: the OAuth 2.0 device flow (RFC 8628) against the site's OIDC provider, token
refresh, and a token file only its owner can read. No Django: this runs on laptops and worker nodes.

Other commands get a bearer token with `bearer_token()`, which refreshes it when it has less than
five minutes left (as panda-client does with its ID token).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

DEFAULT_SCOPE = "openid profile email groups offline_access"
REFRESH_MARGIN_S = 300
TIMEOUT_S = 15
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class LoginError(Exception):
    """Login or refresh failed; the message is meant for the person at the terminal."""


def token_file_path(explicit: str | None = None) -> Path:
    """$AILURO_TOKEN_FILE, else $XDG_CONFIG_HOME/ailuro/token.json (~/.config/ailuro/token.json)."""
    if explicit:
        return Path(explicit)
    if os.environ.get("AILURO_TOKEN_FILE"):
        return Path(os.environ["AILURO_TOKEN_FILE"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "ailuro" / "token.json"


def token_file_write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically with mode 0600 from the first byte (never readable by others, even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def token_file_read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoginError(f"not logged in (no {path}); run `ailuro login`") from None
    except ValueError:
        raise LoginError(f"{path} is not a token file; run `ailuro login` again") from None
    if not isinstance(data, dict) or "access_token" not in data:
        raise LoginError(f"{path} holds no access token; run `ailuro login` again")
    return data


def _json(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise LoginError(
            f"{what}: the identity provider answered HTTP {response.status_code}, not JSON"
        ) from None
    if not isinstance(data, dict):
        raise LoginError(f"{what}: unexpected answer from the identity provider")
    return data


def server_auth_config(server: str) -> dict[str, Any]:
    """Issuer, CLI client id and audience as the ailuro server publishes them."""
    try:
        response = requests.get(f"{server.rstrip('/')}/api/v1/auth/config/", timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise LoginError(f"cannot reach the ailuro server {server}: {type(exc).__name__}") from None
    config = _json(response, "server configuration")
    if not config.get("oidc"):
        raise LoginError(f"{server} has no OIDC login configured; ask for an API token instead")
    return config


def provider_endpoints(issuer: str) -> dict[str, Any]:
    try:
        response = requests.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise LoginError(f"cannot reach the identity provider {issuer}: {type(exc).__name__}") from None
    document = _json(response, "discovery")
    if "device_authorization_endpoint" not in document or "token_endpoint" not in document:
        raise LoginError(f"{issuer} does not offer the device flow")
    return document


def device_login(
    *,
    issuer: str,
    client_id: str,
    audience: str = "",
    scope: str = DEFAULT_SCOPE,
    show: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Run the device flow: show the verification URL and code, poll until approved; the token data."""
    endpoints = provider_endpoints(issuer)
    extra = {"resource": audience} if audience else {}
    try:
        started = requests.post(
            endpoints["device_authorization_endpoint"],
            data={"client_id": client_id, "scope": scope, **extra},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        raise LoginError(f"cannot reach the identity provider: {type(exc).__name__}") from None
    device = _json(started, "device authorization")
    if started.status_code != 200:
        raise LoginError(
            f"device authorization refused: {device.get('error_description') or device.get('error')}"
        )
    show(f"To log in, open {device['verification_uri']} and enter the code {device['user_code']}")
    if device.get("verification_uri_complete"):
        show(f"(or open {device['verification_uri_complete']})")
    interval = float(device.get("interval") or 5)
    deadline = time.monotonic() + float(device.get("expires_in") or 600)
    while time.monotonic() < deadline:
        sleep(interval)
        try:
            polled = requests.post(
                endpoints["token_endpoint"],
                data={
                    "grant_type": DEVICE_GRANT,
                    "device_code": device["device_code"],
                    "client_id": client_id,
                    **extra,
                },
                timeout=TIMEOUT_S,
            )
        except requests.RequestException:
            continue  # a blip while the person is still typing the code: poll again
        answer = _json(polled, "token")
        if polled.status_code == 200:
            return _token_data(
                answer, issuer=issuer, client_id=client_id, audience=audience, endpoints=endpoints
            )
        error = answer.get("error")
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending":
            raise LoginError(f"login not completed: {answer.get('error_description') or error}")
    raise LoginError("the login code expired before it was used; run `ailuro login` again")


def _token_data(
    answer: dict[str, Any], *, issuer: str, client_id: str, audience: str, endpoints: dict[str, Any]
) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "client_id": client_id,
        "audience": audience,
        "token_endpoint": endpoints["token_endpoint"],
        "access_token": answer["access_token"],
        "refresh_token": answer.get("refresh_token", ""),
        "id_token": answer.get("id_token", ""),
        "expires_at": int(time.time()) + int(answer.get("expires_in") or 3600),
    }


def refresh(data: dict[str, Any]) -> dict[str, Any]:
    """A new access token from the refresh token (RFC 6749 §6); the provider may rotate the refresh token."""
    if not data.get("refresh_token"):
        raise LoginError("no refresh token stored; run `ailuro login` again")
    extra = {"resource": data["audience"]} if data.get("audience") else {}
    try:
        response = requests.post(
            data["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": data["refresh_token"],
                "client_id": data["client_id"],
                **extra,
            },
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        raise LoginError(f"cannot reach the identity provider: {type(exc).__name__}") from None
    answer = _json(response, "refresh")
    if response.status_code != 200:
        raise LoginError(f"refresh refused ({answer.get('error')}); run `ailuro login` again")
    fresh = _token_data(
        answer,
        issuer=data["issuer"],
        client_id=data["client_id"],
        audience=data.get("audience", ""),
        endpoints={"token_endpoint": data["token_endpoint"]},
    )
    fresh["refresh_token"] = fresh["refresh_token"] or data["refresh_token"]
    fresh["id_token"] = fresh["id_token"] or data.get("id_token", "")
    return fresh


def bearer_token(path: Path | None = None) -> str:
    """The stored access token, refreshed (and the file rewritten) when it is about to expire."""
    file = path or token_file_path()
    data = token_file_read(file)
    if int(data.get("expires_at", 0)) - REFRESH_MARGIN_S < time.time():
        data = refresh(data)
        token_file_write(file, data)
    return str(data["access_token"])
