"""Hardening middleware: request ids, per-endpoint body caps, security headers (CSP and friends),
a 503 with Retry-After when the database or the broker is down, and the WSGI handler that gives
the pilot protocol's hot endpoints a lean middleware chain."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import ResolverMatch, set_urlconf
from django.utils.module_loading import import_string

from core.logging import log_context_reset, log_context_set
from core.unavailable import answer_unavailable, unavailable_dependency

# An X-Request-ID a proxy or client sends is kept when it looks like an id (nginx's $request_id,
# a UUID, a trace id); anything else is replaced, so a log line never carries arbitrary text.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def body_cap_for_path(path: str, caps: dict[str, int]) -> int:
    """The cap of the longest matching path prefix (the "/" entry is the default)."""
    best = ""
    for prefix in caps:
        if path.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return caps.get(best, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def _error_reply(path: str, message: str, status: int, *, field: str = "") -> JsonResponse:
    """An error in the caller's own format: pilots parse only their protocol's envelope; the REST
    API's names the `field` when there is one."""
    if path.startswith("/api/v1/pilot/"):
        return JsonResponse({"success": False, "message": message, "data": None}, status=status)
    if path.startswith("/server/panda/"):
        return JsonResponse({"StatusCode": 30, "errorDialog": message}, status=status)
    return JsonResponse({"detail": message, **({"field": field} if field else {})}, status=status)


class RequestIdMiddleware:
    """Every log line written while a request is served carries `request_id`: the caller's
    X-Request-ID when it looks like an id, else a new one; the response echoes it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = log_context_set(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            log_context_reset(token)
        response["X-Request-ID"] = request_id
        return response


class BodySizeLimitMiddleware:
    """413 before any view reads the body, when Content-Length exceeds the cap of the path
    (settings.AILURO_BODY_CAPS); 400 for a URL path or query string holding a NUL character. Bodies without a length (chunked) stay bounded by Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE and by the reverse proxy's limit (docs/deployment/oidc.md)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # `/api/v1/sites/a%00b/`, `?jobname=a%00b`: PostgreSQL refuses NUL in text, so no view
        # could look such a value up or filter by it.
        if "\x00" in request.path:
            return _error_reply(
                request.path.replace("\x00", ""), "the URL path holds a NUL character (%00)", 400
            )
        if "%00" in request.META.get("QUERY_STRING", ""):
            field = next(
                (
                    key
                    for key, values in request.GET.lists()
                    if "\x00" in key or any("\x00" in v for v in values)
                ),
                "",
            )
            where = f"query parameter {field.replace(chr(0), '')!r}" if field else "the query string"
            return _error_reply(
                request.path, f"{where} holds a NUL character (%00)", 400, field=field.replace("\x00", "")
            )
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            return _error_reply(request.path, f"invalid Content-Length {raw_length[:20]!r}", 400)
        if length < 0:
            return _error_reply(request.path, "invalid Content-Length", 400)
        cap = body_cap_for_path(request.path, settings.AILURO_BODY_CAPS)
        if length > cap:
            return _error_reply(
                request.path,
                f"request body of {length} bytes exceeds the {cap}-byte limit of {request.path}",
                413,
            )
        return self.get_response(request)


class SecurityHeadersMiddleware:
    """Content-Security-Policy (settings.AILURO_CSP) and a restrictive Permissions-Policy on every
    response; SecurityMiddleware already sets nosniff, Referrer-Policy, HSTS and COOP."""

    PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.AILURO_CSP and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.AILURO_CSP
        response.setdefault("Permissions-Policy", self.PERMISSIONS_POLICY)
        response.setdefault("X-Content-Type-Options", "nosniff")
        return response


class ApiJsonErrorsMiddleware:
    """Errors under /api/ are JSON (`{"detail": …}`) even when Django answers first — an unresolved
    URL such as /api/v1/workflows/abc/ would otherwise get the HTML 404 page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and response.get("Content-Type", "").startswith("text/html")
        ):
            replacement = JsonResponse({"detail": response.reason_phrase}, status=response.status_code)
            for header in ("Allow", "Retry-After", "WWW-Authenticate"):
                if header in response:
                    replacement[header] = response[header]
            return replacement
        return response


class DependencyUnavailableMiddleware:
    """A view that failed because the database or the broker is unavailable answers 503 with
    Retry-After (settings.AILURO_RETRY_AFTER_S) in its interface's format (core.unavailable), logs
    one warning line instead of a traceback, and drops the broken database connection so the
    process reconnects on its own once the database is back. Every other exception goes on to
    Django's handling (a 500 and its traceback in the log)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        part = unavailable_dependency(exception)
        return None if part is None else answer_unavailable(request, exception, part)


class _LeanChainHandler(BaseHandler):
    """A request handler over a given middleware list instead of settings.MIDDLEWARE (sync only,
    the same construction as BaseHandler.load_middleware)."""

    def __init__(self, middleware: list[str]) -> None:
        super().__init__()
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        # BaseHandler._get_response (URL resolution, the view) is not in django-stubs.
        handler: Callable[[HttpRequest], Any] = convert_exception_to_response(
            self._get_response  # type: ignore[attr-defined]
        )
        for path in reversed(middleware):
            instance = import_string(path)(handler)
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, instance.process_view)
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(instance.process_template_response)
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(instance.process_exception)
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler
        self._matches: dict[tuple[str, str], ResolverMatch] = {}

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """A path resolves to the same match in one URL configuration, so each of the lane's
        (settings.AILURO_PILOT_LANE: a few exact paths) is resolved once per process and
        configuration: Django's resolution tries the project's patterns one by one on every
        request."""
        key = (getattr(request, "urlconf", None) or settings.ROOT_URLCONF, request.path_info)
        match = self._matches.get(key)
        if match is None:
            match = self._matches[key] = super().resolve_request(request)
            return match
        if hasattr(request, "urlconf"):
            set_urlconf(request.urlconf)
        request.resolver_match = match
        return match


# What a pilot-lane process answers besides the lane itself: the probes of its service manager.
LANE_PROBES = frozenset({"/healthz", "/readyz"})


class PilotLaneMixin:
    """For a Django handler: the pilot protocol's calls (settings.AILURO_PILOT_LANE, exact paths)
    run only the middleware of settings.AILURO_PILOT_MIDDLEWARE. In a process of the pilot lane's
    own server (settings.AILURO_WEB_ROLE "pilot"), every other path but the probes is answered
    404 in its caller's format before anything reads its body.

    Those views authenticate by bearer token, are CSRF-exempt and never touch sessions, users,
    messages or static files, yet the full chain cost a heartbeat ~0.07 ms of its ~0.45 ms of
    Python (docs/performance.md). Everything else of the request cycle stays Django's: the
    request_started/request_finished signals (database connection lifetime), URL resolution, error
    responses and their logging. The security middleware (HTTPS redirect, HSTS, CSP and the other
    headers, body caps, JSON errors) is in the lean chain too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pilot_paths = frozenset(settings.AILURO_PILOT_LANE)
        self._pilot_handler = _LeanChainHandler(list(settings.AILURO_PILOT_MIDDLEWARE))
        self._lane_only = settings.AILURO_WEB_ROLE == "pilot"

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if path in self._pilot_paths:
            return self._pilot_handler.get_response(request)
        if self._lane_only and path not in LANE_PROBES:
            return _error_reply(
                request.path,
                f"{request.path} is not served here: this is the pilot lane, which answers the pilot "
                "protocol's calls only; the web server answers the rest",
                404,
            )
        return super().get_response(request)  # type: ignore[misc,no-any-return]


class PilotLaneWSGIHandler(PilotLaneMixin, WSGIHandler):
    """config.wsgi's application: Django's WSGI handler with the pilot lane."""
