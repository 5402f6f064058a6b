"""Bearer-token authentication shared by the REST API (DRF) and the plain pilot views."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.models import ApiToken, token_hash
from core.services import TOKEN_PREFIX


def bearer_from_request(request: HttpRequest) -> str | None:
    header = str(request.META.get("HTTP_AUTHORIZATION", ""))
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def api_token_lookup(raw: str) -> ApiToken | None:
    """The live token for `raw`, or None (unknown, revoked or expired)."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(raw), revoked_at__isnull=True)
        .first()
    )
    if token is None:
        return None
    if token.expires_at is not None and token.expires_at <= timezone.now():
        return None
    if not token.user.is_active:
        return None
    return token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer ail_…` tokens made by `manage.py create_token`.

    Tokens without the ailuro prefix are left to the next class (OIDC JWTs), so both kinds work
    side by side.
    """

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        raw = bearer_from_request(request._request)
        if raw is None or not raw.startswith(TOKEN_PREFIX):
            return None
        token = api_token_lookup(raw)
        if token is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked API token")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="ailuro"'
