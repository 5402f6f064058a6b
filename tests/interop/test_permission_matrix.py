"""The role × endpoint × own/other matrix over every kind of credential: OIDC users of each role
(groups at the real provider), OIDC robots bound to queues, `ail_` tokens, anonymous.

Columns: the public API schema, an authenticated API call (whoami, with the roles it reports), the
Django admin (session login), and the pilot queue binding — own queue vs another fleet's queue.
The REST endpoints of the apps add their own access-function tests on top of these roles.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.auth import api_token_lookup
from core.models import OidcAccount
from core.roles import queue_allowed
from core.services import robot_register, token_create
from tests.factories import QueueFactory
from tests.interop.oidc_provider import OidcProvider

pytestmark = [pytest.mark.django_db, pytest.mark.interop]

ALL_USER = ["reader", "user"]
OPERATOR = ["operator", "reader", "user"]
ADMIN = ["admin", "operator", "reader", "user"]

# identity: (roles reported by whoami or None for 401, admin site status, Q1 allowed, Q2 allowed)
MATRIX: dict[str, tuple[list[str] | None, int, bool, bool]] = {
    "anonymous": (None, 302, False, False),
    "oidc reader (rita)": (["reader"], 302, False, False),
    "oidc user (bob)": (ALL_USER, 302, False, False),
    "oidc operator (alice)": (OPERATOR, 302, False, False),
    "oidc admin (carol)": (ADMIN, 200, False, False),
    "oidc pilot user (pilot)": (["pilot"], 302, False, False),  # a person: no queue binding
    "robot fleet Q1 (wms-robot)": (["pilot"], 302, True, False),
    "robot fleet Q2 (other-robot)": (["pilot"], 302, False, True),
    "ail_ pilot token bound to Q1": (["pilot"], 302, True, False),
    "ail_ unbound pilot token": (["pilot"], 302, True, True),
    "ail_ user token": (ALL_USER, 302, False, False),
    "ail_ admin token": (ADMIN, 302, False, False),  # tokens are for the API, not the admin site
}

DEVICE_LOGINS = {
    "oidc reader (rita)": "rita",
    "oidc user (bob)": "bob",
    "oidc operator (alice)": "alice",
    "oidc admin (carol)": "carol",
    "oidc pilot user (pilot)": "pilot",
}


def _credential(name: str, provider: OidcProvider) -> str | None:
    QueueFactory(name="Q1")
    QueueFactory(name="Q2")
    robot_register(name="fleet1", client_id="wms-robot", queues=["Q1"])
    robot_register(name="fleet2", client_id="other-robot", queues=["Q2"])
    if name in DEVICE_LOGINS:
        return str(provider.device_tokens(DEVICE_LOGINS[name])["access_token"])
    if name.startswith("robot"):
        return provider.robot_token(client="wms-robot" if "wms-robot" in name else "other-robot")
    if name == "ail_ pilot token bound to Q1":
        return token_create(username="fleet-q1", role="pilot", queues=["Q1"])
    if name == "ail_ unbound pilot token":
        return token_create(username="fleet-any", role="pilot")
    if name == "ail_ user token":
        return token_create(username="tokenuser", role="user")
    if name == "ail_ admin token":
        return token_create(username="tokenadmin", role="admin")
    return None


@pytest.mark.parametrize("identity", list(MATRIX))
def test_each_identity_gets_exactly_its_row_of_the_matrix(identity: str, oidc_server: OidcProvider) -> None:
    roles, admin_status, q1, q2 = MATRIX[identity]
    raw = _credential(identity, oidc_server)
    api = APIClient()
    if raw:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    schema = api.get("/api/schema/")
    whoami = api.get("/api/v1/whoami/")
    auth: Any = None
    if whoami.status_code == 200:
        auth = whoami.renderer_context["request"].auth  # type: ignore[attr-defined]
    site = Client()
    if identity in DEVICE_LOGINS:  # people reach the admin through their browser session
        site.force_login(OidcAccount.objects.get(subject=DEVICE_LOGINS[identity]).user)
    elif raw and raw.startswith("ail_"):
        site.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    admin = site.get("/admin/")

    assert schema.status_code == 200
    if roles is None:
        assert whoami.status_code in (401, 403)
    else:
        assert whoami.status_code == 200, whoami.content
        assert whoami.json()["roles"] == roles
    assert admin.status_code == admin_status
    if raw and raw.startswith("ail_"):
        auth = api_token_lookup(raw)
    assert (queue_allowed(auth, "Q1"), queue_allowed(auth, "Q2")) == (q1, q2)


def test_a_role_claimed_by_header_is_ignored(oidc_server: OidcProvider) -> None:
    """PanDA picks the role from the Origin header; here only verified groups count."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {oidc_server.device_tokens('bob')['access_token']}")

    response = api.get("/api/v1/whoami/", HTTP_ORIGIN="atlas.production", HTTP_X_AILURO_ROLE="admin")

    assert response.json()["roles"] == ALL_USER


def test_losing_the_admin_group_at_the_provider_closes_the_admin_site(
    settings: Any, oidc_server: OidcProvider
) -> None:
    carol_token = oidc_server.device_tokens("carol")["access_token"]
    APIClient().get("/api/v1/whoami/", HTTP_AUTHORIZATION=f"Bearer {carol_token}")
    user = OidcAccount.objects.get(subject="carol").user
    user.refresh_from_db()
    assert user.is_staff
    assert user.is_superuser

    # the same person, now mapped to no admin group: roles and admin flags follow the provider
    settings.OIDC_ROLE_GROUPS = {"atlas": "user"}
    APIClient().get("/api/v1/whoami/", HTTP_AUTHORIZATION=f"Bearer {carol_token}")
    user.refresh_from_db()

    assert not user.is_staff
    assert not user.is_superuser
    assert sorted(user.groups.values_list("name", flat=True)) == ["ailuro-user"]
