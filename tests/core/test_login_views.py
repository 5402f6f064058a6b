from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rate_limit_leftovers() -> None:
    cache.clear()


def test_without_oidc_login_goes_to_the_password_form_keeping_a_local_next() -> None:
    response = Client().get("/login/?next=/jobs/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=%2Fjobs%2F"


def test_login_never_redirects_to_another_site() -> None:
    response = Client().get("/login/?next=https://evil.test/phish")

    assert response["Location"] == "/admin/login/?next=%2F"


def test_logout_is_post_only_and_csrf_protected() -> None:
    user = UserFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 403  # no CSRF token: still logged in
    assert client.session.get("_auth_user_id") == str(user.pk)

    client.get("/login/failed/")  # any page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post("/logout/", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_the_page_header_offers_logout_as_a_form_with_a_csrf_token() -> None:
    client = Client()
    client.force_login(UserFactory(username="dora"))

    html = client.get("/login/failed/").content.decode()

    assert 'action="/logout/"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_auth_config_tells_the_cli_nothing_when_oidc_is_off() -> None:
    assert Client().get("/api/v1/auth/config/").json() == {
        "oidc": False,
        "issuer": "",
        "client_id": "",
        "audience": "",
    }


def test_misconfigured_role_mapping_stops_at_the_system_check(settings: Any) -> None:
    settings.OIDC_ROLE_GROUPS = {"atlas/production": "superhero"}

    with pytest.raises(SystemCheckError, match=r"ailuro.E010.*superhero"):
        call_command("check")


def test_oidc_without_an_audience_is_a_check_error(settings: Any) -> None:
    settings.OIDC_ENABLED = True
    settings.OIDC_ISSUER = "https://iam.example.org"
    settings.OIDC_AUDIENCE = []

    with pytest.raises(SystemCheckError, match="ailuro.E012"):
        call_command("check")
