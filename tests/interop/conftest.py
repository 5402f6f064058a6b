from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from core import oidc
from tests.interop.oidc_provider import OidcProvider, provider_install

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
