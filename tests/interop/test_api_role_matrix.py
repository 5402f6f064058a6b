"""The role × endpoint × own/other matrix over every operation the API schema publishes, so each
REST endpoint an app adds is covered without a new test:

* anonymous (anonymous read off): every operation but the public ones is 401/403;
* read-only identities — an OIDC reader, an `ail_` pilot token, an OIDC pilot robot — never get
  past the permission check of an unsafe operation (401/403, or 404 for an id that does not exist);
* own vs other: on an unsafe operation about a workflow, a plain user is refused (403) on someone
  else's workflow and not refused on their own; an operator is not refused on anyone's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from core.models import OidcAccount
from core.services import robot_register, token_create
from dispatcher.services import NewJob, workflow_submit
from tests.factories import QueueFactory
from tests.interop.oidc_provider import OidcProvider

pytestmark = [pytest.mark.django_db, pytest.mark.interop]

PUBLIC = {"/api/v1/auth/config/"}
UNSAFE = {"post", "put", "patch", "delete"}
WORKFLOW_PARAM = "workflow_id"


def _operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (path, method) for path, item in schema["paths"].items() for method in item if method != "parameters"
    ]


def _fill(path: str, values: dict[str, str] | None = None) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: (values or {}).get(m.group(1), "999999"), path)


def _call(client: APIClient, method: str, url: str) -> Any:
    return getattr(client, method)(url, {}, format="json") if method in UNSAFE else client.get(url)


def _bearer(raw: str | None) -> APIClient:
    client = APIClient()
    if raw:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_anonymous_callers_reach_nothing_but_the_public_operations(settings: Any) -> None:
    settings.AILURO = {**settings.AILURO, "ANONYMOUS_READ": False}
    operations = _operations()
    checked = 0

    for path, method in operations:
        if path in PUBLIC:
            continue
        response = _call(APIClient(), method, _fill(path))
        assert response.status_code in (401, 403), (method, path, response.status_code)
        checked += 1

    assert ("/api/v1/whoami/", "get") in operations
    assert checked >= 1


def test_read_only_identities_never_pass_the_permission_check_of_an_unsafe_operation(
    oidc_server: OidcProvider,
) -> None:
    QueueFactory(name="Q1")
    robot_register(name="fleet", client_id="wms-robot", queues=["Q1"])
    identities = {
        "oidc reader": oidc_server.device_tokens("rita")["access_token"],
        "ail_ pilot token": token_create(username="fleet-token", role="pilot", queues=["Q1"]),
        "oidc pilot robot": oidc_server.robot_token(),
        "ail_ reader token": token_create(username="reader-token", role="reader"),
    }
    unsafe = [(p, m) for p, m in _operations() if m in UNSAFE and p not in PUBLIC]

    for name, raw in identities.items():
        client = _bearer(raw)
        assert client.get("/api/v1/whoami/").status_code == 200, name  # authenticated, just not allowed
        for path, method in unsafe:
            response = _call(client, method, _fill(path))
            assert response.status_code in (401, 403, 404), (name, method, path, response.status_code)


def test_users_act_on_their_own_workflows_only_and_operators_on_all(oidc_server: OidcProvider) -> None:
    bob = oidc_server.device_tokens("bob")["access_token"]  # user
    alice = oidc_server.device_tokens("alice")["access_token"]  # operator
    dora = oidc_server.device_tokens("dora")["access_token"]  # user, the owner
    for raw in (bob, alice, dora):
        assert _bearer(raw).get("/api/v1/whoami/").status_code == 200
    owner = OidcAccount.objects.get(subject="dora").user
    workflow_ops = [
        (p, m)
        for p, m in _operations()
        if m in UNSAFE and "{" + WORKFLOW_PARAM + "}" in p and p.count("{") == 1
    ]

    for path, method in workflow_ops:
        workflow = workflow_submit(owner=owner, name="w", jobs=[NewJob(name="a", label="l", command="true")])
        url = _fill(path, {WORKFLOW_PARAM: str(workflow.pk)})
        other = _call(_bearer(bob), method, url)
        assert other.status_code == 403, (method, path, other.status_code)
        for who in (dora, alice):
            response = _call(_bearer(who), method, url)
            assert response.status_code not in (401, 403, 404), (method, path, response.status_code)

    # whoever the API grows, the roles the matrix relies on are these
    assert _bearer(bob).get("/api/v1/whoami/").json()["roles"] == ["reader", "user"]
    assert _bearer(alice).get("/api/v1/whoami/").json()["roles"] == ["operator", "reader", "user"]
