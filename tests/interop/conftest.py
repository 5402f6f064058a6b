from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from core import oidc
from tests.ailuro.server import ROOT, AiluroServer
from tests.interop.oidc_provider import OidcProvider, provider_install
from tests.workers import install_lock

ROLE_GROUPS = {
    "atlas": "user",
    "atlas/production": "operator",
    "atlas/admin": "admin",
    "atlas/monitor": "reader",
    "atlas/pilot": "pilot",
}


@pytest.fixture(scope="session")
def oidc_provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One provider per test run; its browser client may redirect back to the live server."""
    provider_install()
    provider = OidcProvider(
        tmp_path_factory.mktemp("op") / "jwks.json", [f"{live_server.url}/oidc/callback/"]
    )
    provider.start()
    yield provider
    provider.stop()


def oidc_configure(settings: Any, provider: OidcProvider) -> None:
    """Point the server at `provider`, as the OIDC_* environment variables would."""
    settings.OIDC_ISSUER = provider.issuer
    settings.OIDC_ENABLED = True
    settings.OIDC_RP_CLIENT_ID = "wms-web"
    settings.OIDC_RP_CLIENT_SECRET = "wms-web-secret"
    settings.OIDC_AUDIENCE = ["urn:wms:api"]
    settings.OIDC_CLI_CLIENT_ID = "wms-cli"
    settings.OIDC_ROLE_GROUPS = ROLE_GROUPS
    settings.OIDC_DEFAULT_ROLE = "user"
    settings.AUTHENTICATION_BACKENDS = [
        "core.oidc.AiluroOIDCBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    oidc.caches_clear()
    cache.clear()


@pytest.fixture
def oidc_server(settings: Any, oidc_provider: OidcProvider) -> Iterator[OidcProvider]:
    oidc_configure(settings, oidc_provider)
    yield oidc_provider
    oidc.caches_clear()
    cache.clear()


# --- the released PanDA clients (var/clients-venv) --------------------------------------------

CLIENT_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def clients_venv() -> Path:
    """scripts/clients.sh install: idempotent, ~1 minute on a clean machine."""
    with install_lock("clients"):
        subprocess.run([str(ROOT / "scripts" / "clients.sh"), "install"], check=True, timeout=1200)
    venv = ROOT / "var" / "clients-venv"
    assert (venv / "bin" / "bps").exists()
    return venv


def client_env(venv: Path, server: AiluroServer, token: str, home: Path, vo: str = "Rubin") -> dict[str, str]:
    """What a Rubin or ATLAS user exports to point the clients at ailuro (docs: Coming from PanDA)."""
    home.mkdir(parents=True, exist_ok=True)
    base = f"{server.url}/server/panda"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PANDA", "DATABASE_URL"))}
    env.update(
        {
            "PANDA_URL": base,
            "PANDA_URL_SSL": base,
            "PANDACACHE_URL": base,
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": vo,
            "PANDA_AUTH_ID_TOKEN": token,
            "PANDA_BEHIND_REAL_LB": "1",  # else importing pandaclient.Client resolves hosts
            "PANDA_VERIFY_HOST": "off",
            "PANDA_CONFIG_ROOT": str(home / ".pathena"),
            "HOME": str(home),
            "USER": "alice",
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            "PANDA_SYS": str(venv),
        }
    )
    return env


def run_client(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S + 10,
        check=False,
    )


def last_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
