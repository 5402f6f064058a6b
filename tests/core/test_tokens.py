from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIRequestFactory

from core.auth import ApiTokenAuthentication, api_token_lookup
from core.models import ApiToken, token_hash
from core.services import token_revoke
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db


def _create(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    call_command("create_token", *args)
    return capsys.readouterr().out.strip()


def test_create_token_prints_a_token_stored_only_as_a_hash(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _create(capsys, "--user", "alice", "--role", "operator", "--name", "laptop")

    token = ApiToken.objects.get()
    assert raw.startswith("ail_")
    assert len(raw) > 40
    assert token.key_hash == token_hash(raw)
    assert raw not in token.key_hash
    assert (token.user.username, token.role, token.name) == ("alice", "operator", "laptop")
    assert api_token_lookup(raw) == token


def test_pilot_tokens_are_bound_to_existing_queues(capsys: pytest.CaptureFixture[str]) -> None:
    QueueFactory(name="SLAC_Rubin_Medium")
    raw = _create(capsys, "--user", "slac-pilots", "--role", "pilot", "--queue", "SLAC_Rubin_Medium")

    assert api_token_lookup(raw).queues == ["SLAC_Rubin_Medium"]  # type: ignore[union-attr]
    with pytest.raises(CommandError, match="unknown queue"):
        call_command("create_token", "--user", "x", "--role", "pilot", "--queue", "NOPE")
    with pytest.raises(CommandError, match="use it with --role pilot"):
        call_command("create_token", "--user", "x", "--queue", "SLAC_Rubin_Medium")


def test_a_revoked_token_no_longer_authenticates(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _create(capsys, "--user", "bob")
    request = APIRequestFactory().get("/api/v1/workflows/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    from rest_framework.request import Request

    user, token = ApiTokenAuthentication().authenticate(Request(request))  # type: ignore[misc]
    assert user.username == "bob"

    assert token_revoke(token_id=token.pk)
    assert api_token_lookup(raw) is None
    from rest_framework.exceptions import AuthenticationFailed

    with pytest.raises(AuthenticationFailed):
        ApiTokenAuthentication().authenticate(Request(request))


def test_plain_views_authenticate_api_tokens_and_refuse_bad_ones_with_401(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from django.test import RequestFactory
    from rest_framework.exceptions import AuthenticationFailed

    from core.auth import authenticate_bearer

    raw = _create(capsys, "--user", "carl", "--role", "pilot")
    factory = RequestFactory()

    user, token = authenticate_bearer(factory.get("/", HTTP_AUTHORIZATION=f"Bearer {raw}"))  # type: ignore[misc]
    assert (user.username, token.role) == ("carl", "pilot")
    assert authenticate_bearer(factory.get("/")) is None
    with pytest.raises(AuthenticationFailed, match="invalid, expired or revoked"):
        authenticate_bearer(factory.get("/", HTTP_AUTHORIZATION="Bearer ail_nope"))
    with pytest.raises(AuthenticationFailed, match="OIDC is not configured"):
        authenticate_bearer(factory.get("/", HTTP_AUTHORIZATION="Bearer eyJ.x.y"))
