"""panda-client's system calls: is_alive and the device-flow login configuration."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_is_alive_answers_in_panda_clients_envelope_without_credentials(client: Client) -> None:
    response = client.get("/api/v1/system/is_alive", HTTP_ORIGIN="atlas")
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "alive", "data": None}


def test_is_alive_is_a_get(client: Client) -> None:
    assert client.post("/api/v1/system/is_alive").status_code == 405


@pytest.fixture
def oidc_on(settings: Any) -> None:
    settings.OIDC_ENABLED = True
    settings.OIDC_ISSUER = "https://idp.example.org/realms/rubin"
    settings.AILURO_PANDACOMPAT = {
        **settings.AILURO_PANDACOMPAT,
        "AUTH_CLIENT_ID": "panda-cli",
        "AUTH_VOS": [],
    }


def test_the_auth_config_names_the_public_client_and_the_providers_discovery(
    client: Client, oidc_on: None
) -> None:
    response = client.get("/auth/Rubin_auth_config.json")
    assert response.status_code == 200
    assert response.json() == {
        "client_id": "panda-cli",
        "client_secret": "",
        "audience": "panda-cli",
        "oidc_config_url": "https://idp.example.org/realms/rubin/.well-known/openid-configuration",
        "vo": "Rubin",
    }


def test_the_audience_can_be_set_apart_from_the_client(client: Client, oidc_on: None, settings: Any) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "AUTH_AUDIENCE": "urn:wms:api"}
    assert client.get("/auth/atlas_auth_config.json").json()["audience"] == "urn:wms:api"


def test_only_the_listed_vos_have_an_auth_config(client: Client, oidc_on: None, settings: Any) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "AUTH_VOS": ["Rubin"]}
    assert client.get("/auth/Rubin_auth_config.json").status_code == 200
    assert client.get("/auth/atlas_auth_config.json").status_code == 404


def test_without_oidc_there_is_no_auth_config(client: Client, settings: Any) -> None:
    settings.OIDC_ENABLED = False
    response = client.get("/auth/Rubin_auth_config.json")
    assert response.status_code == 404
    assert "Rubin" in response.json()["detail"]
