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


class IdentityProviderUnavailable(exceptions.APIException):
    """The OIDC provider is down or failing: the client should retry later, the token may be fine."""

    status_code = 503
    default_detail = "identity provider unavailable; retry later"
    default_code = "identity_provider_unavailable"


class OIDCBearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <OIDC access token>`: JWTs validated locally against the provider's
    keys, opaque tokens through userinfo (cached briefly), robots mapped to their registered role.

    `request.auth` is a `core.oidc.OidcIdentity` (robots carry `role` and `queues`, so
    `core.roles.user_roles(request.user, request.auth)` works as for `ail_` tokens). `ail_` tokens
    and requests without a bearer token are left to the other classes; with OIDC off every other
    bearer value is refused.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        raw = bearer_from_request(request._request)
        if raw is None or raw.startswith(TOKEN_PREFIX):
            return None
        return oidc_bearer_authenticate(raw)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="ailuro"'


def oidc_bearer_authenticate(raw: str) -> tuple[Any, Any]:
    from core import oidc  # the OIDC module pulls in requests and mozilla-django-oidc; pilots need neither

    if not oidc.oidc_enabled():
        raise exceptions.AuthenticationFailed("unknown bearer token (OIDC is not configured on this server)")
    try:
        return oidc.identity_from_access_token(raw)
    except oidc.InvalidToken as exc:
        raise exceptions.AuthenticationFailed(str(exc)) from None
    except oidc.ProviderUnavailable as exc:
        raise IdentityProviderUnavailable(str(exc)) from None


def authenticate_bearer(request: HttpRequest) -> tuple[Any, Any] | None:
    """For plain (non-DRF) views such as the pilot protocol: the (user, auth) of the request's bearer
    token — an `ApiToken` for `ail_…`, an `OidcIdentity` for OIDC tokens — or None without one.

    Raises DRF's `AuthenticationFailed` (401) or `IdentityProviderUnavailable` (503); plain views
    turn `exc.status_code` and `exc.detail` into their JSON error.
    """
    raw = bearer_from_request(request)
    if raw is None:
        return None
    if raw.startswith(TOKEN_PREFIX):
        token = api_token_lookup(raw)
        if token is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked API token")
        return token.user, token
    return oidc_bearer_authenticate(raw)
