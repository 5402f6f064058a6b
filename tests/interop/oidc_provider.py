"""A real OIDC provider for tests: panva oidc-provider (scripts/oidc/server.mjs) on a free port,
plus the client side of its grants (client credentials, device flow, code flow through the dev
login form) and forging helpers that re-sign claims with the provider's own private key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from tests.workers import install_lock

ROOT = Path(__file__).resolve().parents[2]
OP_DIR = ROOT / "var" / "oidc-provider"
API_AUDIENCE = "urn:wms:api"


def provider_install() -> None:
    """scripts/oidc.sh install: node + the pinned npm packages into var/oidc-provider (idempotent)."""
    with install_lock("oidc-provider"):
        subprocess.run([str(ROOT / "scripts" / "oidc.sh"), "install"], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OidcProvider:
    def __init__(self, keys_file: Path, redirect_uris: list[str], port: int | None = None) -> None:
        self.keys_file = keys_file
        self.redirect_uris = redirect_uris
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_KEYS": str(self.keys_file),
            "OIDC_WEB_REDIRECT_URIS": ",".join(self.redirect_uris),
        }
        self.proc = subprocess.Popen(
            ["node", "server.mjs"], cwd=OP_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.issuer}/jwks", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("the OIDC provider did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    # --- grants ---------------------------------------------------------------------------

    def robot_token(self, client: str = "wms-robot", scope: str = "wms:read wms:pilot") -> str:
        r = requests.post(
            f"{self.issuer}/token",
            auth=(client, f"{client}-secret"),
            data={"grant_type": "client_credentials", "scope": scope},
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def device_approve(self, verification_uri: str, user_code: str, login: str) -> None:
        """What a person does in the browser for the device flow: enter the code, log in, consent."""
        s = requests.Session()
        submit_forms(s, s.get(verification_uri, timeout=10), login, user_code=user_code)

    def device_tokens(self, login: str, *, resource: str | None = API_AUDIENCE) -> dict[str, Any]:
        data = {"client_id": "wms-cli", "scope": "openid email profile groups offline_access"}
        if resource:
            data["resource"] = resource
        auth = requests.post(f"{self.issuer}/device/auth", data=data, timeout=10).json()
        self.device_approve(auth["verification_uri"], auth["user_code"], login)
        grant = {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": auth["device_code"],
            "client_id": "wms-cli",
        }
        if resource:
            grant["resource"] = resource
        r = requests.post(f"{self.issuer}/token", data=grant, timeout=10)
        r.raise_for_status()
        return dict(r.json())

    # --- forging --------------------------------------------------------------------------

    def private_key(self) -> Any:
        return RSAAlgorithm.from_jwk(json.dumps(json.loads(self.keys_file.read_text())["keys"][0]))

    def public_pem(self) -> bytes:
        return (
            self.private_key()
            .public_key()
            .public_bytes(  # type: ignore[no-any-return]
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], kid: str = "test-rs256-1") -> str:
        return jwt.encode(
            claims, self.private_key(), algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"}
        )


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))),
        json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))),
        s,
    )


def hs256_with_public_key(token: str, public_pem: bytes) -> str:
    """The key-confusion forgery: HMAC-SHA256 keyed with the provider's public key bytes."""
    header, claims, _ = unverified_parts(token)
    h = b64({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]})
    p = b64({**claims, "sub": "admin"})
    sig = hmac.new(public_pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._current = {"action": a.get("action") or "", "fields": {}}
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None and a.get("name"):
            self._current["fields"].setdefault(a["name"], a.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def submit_forms(
    s: requests.Session,
    resp: requests.Response,
    login: str,
    user_code: str | None = None,
    max_steps: int = 10,
) -> requests.Response:
    """Fill and submit the provider's dev-only interaction forms (code entry, login, consent)."""
    for _ in range(max_steps):
        parser = _FormParser()
        parser.feed(resp.text)
        if not parser.forms:
            return resp
        form = parser.forms[0]
        data = dict(form["fields"])
        if "user_code" in data:
            data["user_code"] = user_code or ""
        if "login" in data:
            data["login"] = login
        if "password" in data:
            data["password"] = "x"
        resp = s.post(urljoin(resp.url, form["action"]) or resp.url, data=data, timeout=10)
    raise RuntimeError("the provider's interaction did not finish")
