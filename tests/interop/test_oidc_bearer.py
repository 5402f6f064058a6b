"""Bearer tokens from a real OIDC provider against the API: robots, users, every forged token
(`alg: none`, HS256 key confusion, tampered payload, unknown key, expiry, issuer, audience, missing
claims), and a provider outage (503, then recovery)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from core import oidc
from core.models import OidcAccount
from core.oidc import token_cache_key
from core.services import robot_register
from tests.factories import QueueFactory
from tests.interop.conftest import oidc_configure
from tests.interop.oidc_provider import OidcProvider, b64, hs256_with_public_key, unverified_parts

pytestmark = [pytest.mark.django_db, pytest.mark.interop]

WHOAMI = "/api/v1/whoami/"


def whoami(token: str) -> Any:
    return APIClient().get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_registered_robot_acts_as_its_pilot_fleet_bound_to_its_queues(oidc_server: OidcProvider) -> None:
    QueueFactory(name="SLAC_Rubin_Medium")
    robot_register(name="slac-pilots", client_id="wms-robot", role="pilot", queues=["SLAC_Rubin_Medium"])

    response = whoami(oidc_server.robot_token())

    assert response.status_code == 200, response.content
    assert response.json() == {
        "username": "robot-slac-pilots",
        "roles": ["pilot"],
        "kind": "oidc-robot",
        "queues": ["SLAC_Rubin_Medium"],
    }


def test_an_unregistered_robot_client_is_refused(oidc_server: OidcProvider) -> None:
    robot_register(name="slac-pilots", client_id="wms-robot")

    response = whoami(oidc_server.robot_token(client="other-robot"))

    assert response.status_code == 401
    assert "'other-robot' is not registered" in response.json()["detail"]
    assert not get_user_model().objects.filter(username__contains="other-robot").exists()


def test_a_campaign_robot_gets_its_registered_role(oidc_server: OidcProvider) -> None:
    robot_register(name="campaigns", client_id="other-robot", role="operator")

    response = whoami(oidc_server.robot_token(client="other-robot", scope="wms:read wms:write"))

    assert response.status_code == 200
    assert response.json()["roles"] == ["operator", "reader", "user"]


def test_a_user_jwt_maps_groups_to_roles_and_keys_the_user_by_subject(oidc_server: OidcProvider) -> None:
    tokens = oidc_server.device_tokens("alice")

    response = whoami(tokens["access_token"])

    assert response.status_code == 200, response.content
    assert response.json()["roles"] == ["operator", "reader", "user"]
    assert response.json()["kind"] == "oidc-user"
    account = OidcAccount.objects.get(subject="alice")
    assert account.issuer == oidc_server.issuer
    assert sorted(account.user.groups.values_list("name", flat=True)) == ["ailuro-operator", "ailuro-user"]


def test_an_opaque_user_token_goes_to_userinfo_once_then_the_hashed_cache(oidc_server: OidcProvider) -> None:
    opaque = oidc_server.device_tokens("rita", resource=None)["access_token"]
    assert opaque.count(".") != 2

    first = whoami(opaque)
    oidc_server.stop()  # the second answer must come from the cache, not the provider
    try:
        second = whoami(opaque)
    finally:
        oidc_server.start()

    assert first.status_code == second.status_code == 200
    assert second.json()["roles"] == ["reader"]
    assert cache.get(token_cache_key("oidc:userinfo", opaque))["sub"] == "rita"
    assert cache.get(f"oidc:userinfo:{opaque}") is None


def test_an_idp_user_named_like_a_local_superuser_does_not_become_them(oidc_server: OidcProvider) -> None:
    local = get_user_model().objects.create_superuser("bob", password="local-password-1")

    response = whoami(oidc_server.device_tokens("bob")["access_token"])

    assert response.status_code == 200
    assert response.json()["username"].startswith("bob-")
    assert response.json()["roles"] == ["reader", "user"]
    assert OidcAccount.objects.get(subject="bob").user != local


def test_a_user_who_logs_in_with_a_robots_name_is_not_the_robot(oidc_server: OidcProvider) -> None:
    robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")

    response = whoami(oidc_server.device_tokens("wms-robot")["access_token"])

    assert response.status_code == 200
    assert response.json()["kind"] == "oidc-user"
    assert "pilot" not in response.json()["roles"]


def test_group_changes_at_the_provider_replace_the_users_roles(oidc_server: OidcProvider) -> None:
    user = get_user_model().objects.create_user("x")
    OidcAccount.objects.create(user=user, issuer=oidc_server.issuer, subject="carol")
    user.groups.create(name="ailuro-pilot")
    user.groups.create(name="site-staff")

    response = whoami(oidc_server.device_tokens("carol")["access_token"])

    assert response.json()["username"] == "x"
    assert "admin" in response.json()["roles"]
    assert sorted(user.groups.values_list("name", flat=True)) == ["ailuro-admin", "ailuro-user", "site-staff"]


def _forgeries(provider: OidcProvider, token: str) -> dict[str, str]:
    header, claims, signature = unverified_parts(token)
    h, p, _ = token.split(".")
    now = int(time.time())
    return {
        "alg none": b64({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}) + "." + b64(claims) + ".",
        "HS256 key confusion": hs256_with_public_key(token, provider.public_pem()),
        "tampered payload": h + "." + b64({**claims, "sub": "admin"}) + "." + signature,
        "unknown kid": b64({**header, "kid": "nope"}) + "." + p + "." + signature,
        "expired": provider.sign({**claims, "iat": now - 7200, "exp": now - 3600}),
        "not yet valid": provider.sign({**claims, "iat": now + 3600, "exp": now + 7200}),
        "wrong iss": provider.sign({**claims, "iss": "http://evil.test"}),
        "wrong aud": provider.sign({**claims, "aud": "urn:other:api"}),
        "missing exp": provider.sign({k: v for k, v in claims.items() if k != "exp"}),
        "missing sub": provider.sign({k: v for k, v in claims.items() if k != "sub"}),
        "signed with an unpublished kid": provider.sign(claims, kid="rotated-away"),
        "garbage": "not.a.jwt",
        "huge": "x" * 20000,
    }


EXPECTED_REASON = {
    "alg none": "algorithm 'none' is not accepted",
    "HS256 key confusion": "algorithm 'HS256' is not accepted",
    "tampered payload": "signature does not verify",
    "unknown kid": "unknown key",
    "expired": "token expired",
    "not yet valid": "not yet valid",
    "wrong iss": "issuer",
    "wrong aud": "audience",
    "missing exp": "'exp' claim",
    "missing sub": "'sub' claim",
    "signed with an unpublished kid": "unknown key",
    "garbage": "malformed JWT",
    "huge": "too long",
}


def test_every_forged_or_invalid_token_is_a_401_naming_the_reason(oidc_server: OidcProvider) -> None:
    robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")
    genuine = oidc_server.robot_token()
    assert whoami(genuine).status_code == 200

    outcomes = {name: whoami(bad) for name, bad in _forgeries(oidc_server, genuine).items()}

    assert {name: r.status_code for name, r in outcomes.items()} == dict.fromkeys(outcomes, 401)
    for name, response in outcomes.items():
        assert EXPECTED_REASON[name] in response.json()["detail"], (name, response.json())
        assert response["WWW-Authenticate"] == 'Bearer realm="ailuro"'
    assert not get_user_model().objects.filter(username="admin").exists()


def test_tokens_never_reach_the_logs(oidc_server: OidcProvider, caplog: pytest.LogCaptureFixture) -> None:
    robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")
    genuine = oidc_server.robot_token()
    forged = _forgeries(oidc_server, genuine)["tampered payload"]

    with caplog.at_level(logging.DEBUG):
        assert whoami(genuine).status_code == 200
        assert whoami(forged).status_code == 401

    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.__dict__}" for r in caplog.records)
    assert caplog.records  # Django logs the 401; it must not carry the credential
    assert genuine.split(".")[2] not in text
    assert forged.split(".")[1] not in text


def test_provider_outage_gives_503_then_recovers(
    settings: Any, oidc_provider: OidcProvider, tmp_path: Any
) -> None:
    """A second provider of our own, stopped mid-test: fresh tokens the server cannot check are a
    503 (never a 500 or a 401), and everything works again once it is back."""
    provider = OidcProvider(tmp_path / "jwks.json", [])
    provider.start()
    try:
        oidc_configure(settings, provider)
        robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")
        jwt_token = provider.robot_token()
        opaque = provider.device_tokens("bob", resource=None)["access_token"]
        assert whoami(jwt_token).status_code == 200

        provider.stop()
        oidc.caches_clear()  # as in a freshly started web worker: no keys, no discovery yet
        down_jwt, down_opaque = whoami(jwt_token), whoami(opaque)

        provider.start()  # same port, same signing key; opaque tokens died with the old process
        recovered_jwt = whoami(jwt_token)
        recovered_new = whoami(provider.robot_token())
    finally:
        provider.stop()

    assert (down_jwt.status_code, down_opaque.status_code) == (503, 503)
    assert "identity provider unavailable" in down_jwt.json()["detail"]
    assert recovered_jwt.status_code == recovered_new.status_code == 200


def test_a_key_already_cached_keeps_working_while_the_provider_is_down(
    settings: Any, tmp_path: Any, oidc_provider: OidcProvider
) -> None:
    provider = OidcProvider(tmp_path / "jwks.json", [])
    provider.start()
    try:
        oidc_configure(settings, provider)
        robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")
        token = provider.robot_token()
        assert whoami(token).status_code == 200
        provider.stop()
        during = whoami(token)
    finally:
        provider.stop()

    assert during.status_code == 200


def test_with_oidc_off_a_foreign_bearer_token_is_a_401(settings: Any) -> None:
    settings.OIDC_ENABLED = False
    settings.OIDC_ISSUER = ""

    response = whoami("eyJhbGciOiJSUzI1NiJ9.e30.sig")

    assert response.status_code == 401
    assert "OIDC is not configured" in response.json()["detail"]


def _write_keys(path: Any, kid: str) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": kid, "alg": "RS256", "use": "sig"}
    path.write_text(json.dumps({"keys": [jwk]}))


def test_a_rotated_signing_key_is_fetched_on_its_first_unknown_kid(
    settings: Any, tmp_path: Any, oidc_provider: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "jwks.json"
    _write_keys(keys, "2026-a")
    provider = OidcProvider(keys, [])
    provider.start()
    try:
        oidc_configure(settings, provider)
        robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")
        before = whoami(provider.robot_token())
        provider.stop()
        _write_keys(keys, "2026-b")  # the provider rotates to a new key with a new kid
        provider.start()
        monkeypatch.setattr(oidc, "JWKS_MIN_REFETCH_SECONDS", 0)  # as if the last fetch were long ago
        rotated = provider.robot_token()
        after = whoami(rotated)
    finally:
        provider.stop()

    assert before.status_code == 200
    assert unverified_parts(rotated)[0]["kid"] == "2026-b"
    assert after.status_code == 200, after.content


def test_unknown_kids_do_not_make_every_request_call_the_provider(oidc_server: OidcProvider) -> None:
    robot_register(name="slac-pilots", client_id="wms-robot", role="pilot")
    genuine = oidc_server.robot_token()
    assert whoami(genuine).status_code == 200
    _, claims, _ = unverified_parts(genuine)
    forged = [oidc_server.sign(claims, kid=f"made-up-{n}") for n in range(5)]

    oidc_server.stop()  # had each made-up kid reached the provider, these would be 503s
    try:
        codes = [whoami(token).status_code for token in forged]
    finally:
        oidc_server.start()

    assert codes == [401] * 5
