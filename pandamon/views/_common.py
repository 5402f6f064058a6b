"""What every monitor page shares: the read gate, the query string, `?json`, htmx partials."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape

from core.roles import Role, role_allows, user_roles
from pandamon.filters import FilterError, single_params

View = Callable[..., HttpResponse]


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "json" in request.GET or accept.startswith(("application/json", "text/json"))


def bad_request(request: HttpRequest, message: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"error": message}, status=400)
    return HttpResponse(
        f"<!doctype html><title>Bad request</title><h1>Bad request</h1><p>{escape(message)}</p>",
        status=400,
    )


def can_act(request: HttpRequest, owner: str) -> bool:
    """Whether to offer the action buttons on something `owner` submitted; the services' access
    functions decide again on POST."""
    roles = user_roles(request.user)
    if role_allows(roles, Role.OPERATOR):
        return True
    return role_allows(roles, Role.USER) and request.user.get_username() == owner


def monitor_view(view: View) -> View:
    """Read gate (AILURO_ANONYMOUS_READ) and the 400 for a malformed filter value."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.AILURO["ANONYMOUS_READ"] and not request.user.is_authenticated:
            if wants_json(request):
                return JsonResponse({"error": "authentication required"}, status=401)
            return HttpResponse("authentication required", status=401)
        timeout_ms = int(settings.AILURO["WEB_STATEMENT_TIMEOUT_MS"])
        bounded = bool(timeout_ms) and connection.vendor == "postgresql"
        if bounded:
            _session_set(f"SET statement_timeout = {int(timeout_ms)}")
        try:
            return view(request, *args, **kwargs)
        except FilterError as exc:
            return bad_request(request, str(exc))
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != _QUERY_CANCELED:
                raise
            return too_long(request, timeout_ms)
        finally:
            if bounded:
                _session_set("RESET statement_timeout")

    return wrapper


_QUERY_CANCELED = "57014"


def _session_set(statement: str) -> None:
    """A session setting of the page's reads (the statement timeout), sent on the driver's
    connection: a setting, not one of the page's reads (they are counted and pinned). After a
    cancelled read inside a transaction (a test's) the RESET waits for its rollback."""
    connection.ensure_connection()
    try:
        connection.connection.execute(statement)
    except Exception:  # noqa: BLE001  (an aborted transaction: its rollback restores the setting)
        if statement.startswith("SET"):
            raise


def too_long(request: HttpRequest, timeout_ms: int) -> HttpResponse:
    """503: a read ran past the web's statement timeout; the page says what to narrow."""
    message = (
        f"This selection took longer than {timeout_ms / 1000:g} s to read and was stopped. "
        "Narrow it: a shorter window (hours=, date_from=/date_to=), one site, task, user or label."
    )
    if wants_json(request):
        return JsonResponse({"error": message}, status=503)
    return HttpResponse(
        f"<!doctype html><title>Selection too large</title><h1>Selection too large</h1><p>{escape(message)}</p>",
        status=503,
    )


def params_of(request: HttpRequest) -> dict[str, str]:
    return single_params(request.GET)


def respond(
    request: HttpRequest,
    template: str,
    context: Mapping[str, Any],
    data: Callable[[], Mapping[str, Any]],
    *,
    partial: str | None = None,
) -> HttpResponse:
    """`?json` → the data; an htmx request → the page's partial; otherwise the page."""
    if wants_json(request):
        return JsonResponse(dict(data()), encoder=DjangoJSONEncoder, json_dumps_params={"indent": 1})
    if partial and getattr(request, "htmx", False):
        return render(request, f"{template}#{partial}", context)
    return render(request, template, context)


def query_without(params: Mapping[str, str], *names: str) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if k not in names and k != "json"})
