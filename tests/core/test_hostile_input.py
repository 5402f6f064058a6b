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
