"""Browser login through the real provider, driven by Playwright in Debian's Chromium: code flow
with PKCE, groups mapped to roles, then a CSRF-protected POST logout."""

from __future__ import annotations

from typing import Any

import pytest

from core.models import OidcAccount
from tests.browser import chromium
from tests.interop.oidc_provider import OidcProvider

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_a_browser_logs_in_through_the_provider_with_pkce_and_logs_out_by_post(
    transactional_db: None, live_server: Any, oidc_server: OidcProvider
) -> None:
    authorize_urls: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda r: authorize_urls.append(r.url) if "/auth?" in r.url else None)
        page.goto(f"{live_server.url}/login/?next=/api/v1/whoami/%3Fformat%3Djson")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "any")
        page.click("button[type=submit]")
        page.click("button[type=submit]")  # the consent page
        page.wait_for_url(f"{live_server.url}/api/v1/whoami/**")
        whoami = page.evaluate("() => JSON.parse(document.body.innerText)")
        cookies = {c["name"]: c for c in page.context.cookies()}

        page.goto(f"{live_server.url}/login/failed/")
        page.click("form.logout button")
        page.wait_for_url(f"{live_server.url}/")
        after = page.goto(f"{live_server.url}/api/v1/whoami/?format=json")
        after_status = after.status if after else 0

    assert whoami == {
        "username": "alice",
        "roles": ["operator", "reader", "user"],
        "kind": "session",
        "queues": [],
    }
    assert authorize_urls, "the browser never went to the provider"
    assert "code_challenge_method=S256" in authorize_urls[0]
    assert "code_challenge=" in authorize_urls[0]
    assert "nonce=" in authorize_urls[0]
    assert cookies["sessionid"]["httpOnly"] is True
    assert after_status in (401, 403)
    account = OidcAccount.objects.get(subject="alice", issuer=oidc_server.issuer)
    assert sorted(account.user.groups.values_list("name", flat=True)) == ["ailuro-operator", "ailuro-user"]


def test_login_with_the_provider_down_is_a_503_page(
    transactional_db: None, live_server: Any, settings: Any, oidc_server: OidcProvider
) -> None:
    import requests

    from core import oidc

    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens on the discard port
    oidc.caches_clear()

    response = requests.get(f"{live_server.url}/login/", timeout=30)

    assert response.status_code == 503
    assert "identity provider could not be reached" in response.text


def test_a_user_disabled_after_login_loses_the_session(oidc_server: OidcProvider, db: None) -> None:
    from django.test import Client

    from core.oidc import user_for_claims

    user = user_for_claims({"sub": "dora", "preferred_username": "dora", "groups": ["atlas"]})
    client = Client()
    client.force_login(user, backend="core.oidc.AiluroOIDCBackend")
    assert client.get("/api/v1/whoami/?format=json").status_code == 200

    user.is_active = False
    user.save(update_fields=["is_active"])

    assert client.get("/api/v1/whoami/?format=json").status_code == 401
