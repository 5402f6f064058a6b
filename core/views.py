"""Login, logout and the OIDC browser callbacks; `whoami` and the CLI's login configuration; the
liveness and readiness probes; the 500 handler."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View, defaults
from django.views.decorators.http import require_GET, require_POST, require_safe
from drf_spectacular.utils import extend_schema, inline_serializer
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import health, oidc
from core.ratelimit import rate_limited
from core.roles import user_roles
from core.unavailable import answer_unavailable, unavailable_dependency

# Seconds a client (a load balancer, a deploy script) should wait before asking /readyz again.
READYZ_RETRY_AFTER_S = 10


def _safe_next(request: HttpRequest) -> str:
    target = request.GET.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return str(settings.LOGIN_REDIRECT_URL)


def _provider_unavailable(request: HttpRequest) -> HttpResponse:
    return render(request, "core/login_unavailable.html", status=503)


@require_GET
@rate_limited("login")
def login(request: HttpRequest) -> HttpResponse:
    """Start a browser login: the OIDC code flow when configured, else the admin's password form."""
    query = urlencode({"next": _safe_next(request)})
    if oidc.oidc_enabled():
        return HttpResponseRedirect(f"{reverse('core:oidc-authenticate')}?{query}")
    return HttpResponseRedirect(f"{reverse('admin:login')}?{query}")


@require_GET
def login_failed(request: HttpRequest) -> HttpResponse:
    return render(request, "core/login_failed.html", status=403)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """POST only (CSRF-protected): a link or an image on another site cannot log anyone out."""
    auth.logout(request)
    return HttpResponseRedirect(str(settings.LOGOUT_REDIRECT_URL))


class OidcAuthenticateView(OIDCAuthenticationRequestView):
    """Redirect to the provider with state, nonce and a PKCE challenge (upstream), the endpoint taken
    from discovery at request time, so a provider that is down gives a 503 page."""

    get_settings = staticmethod(oidc.oidc_setting)

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc.oidc_enabled():
            return HttpResponseRedirect(reverse("admin:login"))
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc.endpoint("authorization_endpoint")
        except oidc.ProviderUnavailable:
            return _provider_unavailable(request)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)  # type: ignore[no-any-return]


class OidcCallbackView(OIDCAuthenticationCallbackView):
    """The provider's redirect back: code → tokens → ID token checks → user (core.oidc backend)."""

    get_settings = staticmethod(oidc.oidc_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)  # type: ignore[no-any-return]
        except (oidc.ProviderUnavailable, requests.RequestException):
            return _provider_unavailable(request)


class WhoAmIApi(APIView):
    """Who the API thinks the caller is: used by `ailuro login` to confirm a token works."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses=inline_serializer(
            "WhoAmI",
            {
                "username": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
                "kind": serializers.CharField(),
                "queues": serializers.ListField(child=serializers.CharField()),
            },
        )
    )
    def get(self, request: Request) -> Response:
        credential = request.auth
        if isinstance(credential, oidc.OidcIdentity):
            kind = f"oidc-{credential.kind}"
        elif credential is not None:
            kind = "api-token"
        else:
            kind = "session"
        return Response(
            {
                "username": request.user.get_username(),
                "roles": sorted(user_roles(request.user, credential)),
                "kind": kind,
                "queues": list(getattr(credential, "queues", None) or []),
            }
        )


class AuthConfigApi(APIView):
    """Public: what `ailuro login` needs to run the device flow against this server's provider."""

    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

    @extend_schema(
        responses=inline_serializer(
            "AuthConfig",
            {
                "oidc": serializers.BooleanField(),
                "issuer": serializers.CharField(),
                "client_id": serializers.CharField(),
                "audience": serializers.CharField(),
            },
        )
    )
    def get(self, request: Request) -> Response:
        enabled = oidc.oidc_enabled()
        return Response(
            {
                "oidc": enabled,
                "issuer": settings.OIDC_ISSUER if enabled else "",
                "client_id": settings.OIDC_CLI_CLIENT_ID if enabled else "",
                "audience": settings.OIDC_AUDIENCE[0] if enabled and settings.OIDC_AUDIENCE else "",
            }
        )


# --- Probes: liveness and readiness (no login, no rate limit, no redirect to HTTPS) ---------------


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers requests. Touches nothing else (no database), so a database
    outage does not make an orchestrator restart every web process."""
    response = JsonResponse({"status": "alive"})
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every part (core.health.CHECKS) is ok or skipped, else 503 with
    Retry-After and the failing parts named; each part's status is in the body either way.

    `?part=database&part=broker` judges only those parts: what a load balancer's readiness probe
    should ask, so that a stalled loop (a stopped beat) is reported by /readyz without taking every
    web instance out of service, pilots and the monitor with it. An unknown part is a 400."""
    wanted = request.GET.getlist("part")
    unknown = sorted(set(wanted) - set(health.CHECKS))
    if unknown:
        return JsonResponse(
            {"detail": f"unknown readiness part {', '.join(unknown)}; parts: {', '.join(health.CHECKS)}"},
            status=400,
        )
    report = health.readiness({name: health.CHECKS[name] for name in wanted} if wanted else None)
    response = JsonResponse(report.as_json(), status=503 if report.failing else 200)
    if report.failing:
        response["Retry-After"] = str(READYZ_RETRY_AFTER_S)
        # Each failing part logged its warning (core.health); no ERROR line per probe on top.
        response._has_been_logged = True  # type: ignore[attr-defined]
    response["Cache-Control"] = "no-store"
    return response


# --- Errors ---------------------------------------------------------------------------------------


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django's 500 page, except when the exception being handled says the database or
    the broker is unavailable — raised outside a view (in a middleware), where
    core.middleware.DependencyUnavailableMiddleware does not see it — then the same 503 with
    Retry-After as from a view."""
    exception = sys.exc_info()[1]
    part = unavailable_dependency(exception) if exception is not None else None
    if exception is None or part is None:
        return defaults.server_error(request)
    return answer_unavailable(request, exception, part)
