"""The bad inputs the identity layer owns: huge numbers, stored XSS in what the page header shows,
CSRF on session-authenticated API writes, injection-shaped query strings, and misconfiguration
caught by the deploy check."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.parsers import JsonInputError, json_loads_guarded
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_number_with_thousands_of_digits_is_refused_not_a_500() -> None:
    with pytest.raises(JsonInputError, match="malformed JSON"):
        json_loads_guarded('{"priority": ' + "9" * 5000 + "}")


def test_a_script_in_a_username_is_escaped_in_every_page_header() -> None:
    client = Client()
    client.force_login(UserFactory(username='<script>alert(1)</script>"><img src=x onerror=alert(2)>'))

    response = client.get("/login/failed/")
    html = response.content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "script-src 'self'" in response["Content-Security-Policy"]  # and no inline script could run


def test_session_authenticated_api_writes_need_the_csrf_token() -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(UserFactory())

    response = client.post("/api/v1/whoami/", {}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "jobname=*x' OR 1=1--",
        "sort=pandaid;DROP TABLE dispatcher_job",
        "owner__password__startswith=a",
        "limit=1000000000",
        "next=%00%2e%2e%2fetc%2fpasswd",
    ],
)
def test_injection_shaped_query_strings_never_cause_a_server_error(query: str) -> None:
    client = APIClient()
    client.force_authenticate(UserFactory())

    for url in ("/api/v1/whoami/", "/api/schema/", "/login/", "/api/v1/auth/config/"):
        response = client.get(f"{url}?{query}")
        assert response.status_code < 500, (url, response.status_code)


# Found by the attack corpus (tests/core/test_attack_corpus.py): each was a 500 on PostgreSQL.


@pytest.mark.parametrize(
    ("body", "where"),
    [(b'{"name": "\\ud800x"}', "strings"), (b'{"\\udc00": 1}', "keys"), (b'[["a", "\\udfff"]]', "strings")],
)
def test_an_unpaired_surrogate_is_refused_by_the_json_guard(body: bytes, where: str) -> None:
    with pytest.raises(JsonInputError, match=f"unpaired UTF-16 surrogates .* in {where}"):
        json_loads_guarded(body)
    assert json_loads_guarded(b'{"panda": "\\ud83d\\udc3c"}') == {"panda": "\U0001f43c"}  # a pair is fine


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/api/v1/workflows/", "application/json", b'{"name": "w", "\\udc00": 1}'),
        ("/api/v1/workflows/submit/", "application/json", b'{"name": "w\\ud800"}'),
        ("/api/v1/campaigns/", "application/json", b'{"spec": "\\ud800"}'),
    ],
)
def test_a_surrogate_in_a_submitted_spec_is_a_400_naming_it(
    path: str, content_type: str, body: bytes
) -> None:
    from core.services import token_create

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='admin')}")

    response = client.generic("POST", path, body, content_type=content_type)

    assert response.status_code == 400, response.content
    assert "surrogate" in response.content.decode()


def test_a_nul_in_a_path_parameter_or_a_query_parameter_is_a_400_naming_it() -> None:
    client = APIClient()
    client.force_authenticate(UserFactory())

    for path in ("/api/v1/sites/a%00b/", "/api/v1/queues/a%00b/", "/user/a%00b/", "/site/a%00b/"):
        response = client.get(path)
        assert response.status_code == 400, path
        assert response.json() == {"detail": "the URL path holds a NUL character (%00)"}
    response = client.get("/workflow/1/?jobname=a%00b")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "query parameter 'jobname' holds a NUL character (%00)",
        "field": "jobname",
    }


def test_the_admin_offers_no_form_to_add_a_harvester_worker() -> None:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    assert client.get("/admin/harvester/worker/add/").status_code == 403
    assert client.post("/admin/harvester/worker/add/", {"status": "x"}).status_code == 403


def test_a_deeply_nested_payload_log_chunk_is_a_400_not_a_recursion_error() -> None:
    from core.services import token_create

    pilot = token_create(username="pilots", role="pilot")
    response = Client().post(
        "/api/v1/pilot/append_log",
        b"[" * 50_000,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {pilot}",
    )

    assert response.status_code == 400
    assert "nested deeper than" in response.json()["message"]
