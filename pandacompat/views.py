"""Plain views for PanDA's clients: each authenticates the bearer token, calls one function and
answers in the client's own envelope (the relay's `[ok, result]`, panda-client's
`{"success", "message", "data"}`). CSRF-exempt: these are bearer-token APIs and the clients send
`Origin: <VO name>`, which is no browser origin."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import APIException

from core.auth import authenticate_bearer
from core.parsers import JsonInputError, json_loads_guarded
from core.ratelimit import rate_limit_hit, rate_parse, request_identity
from dispatcher import access
from pandacompat.cache import (
    CacheRefused,
    cache_file_find,
    cache_file_store,
    cache_name_from_client,
    cache_path,
)
from pandacompat.decoding import DecodeError, body_decode, relay_call_parse
from pandacompat.relay import RelayRefused, relay_budget, relay_command, relay_max_depth


class _Unauthenticated(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _identity(request: HttpRequest) -> tuple[Any, Any]:
    try:
        found = authenticate_bearer(request)
    except APIException as exc:
        raise _Unauthenticated(str(exc.detail), int(exc.status_code)) from None
    if found is None:
        raise _Unauthenticated("authentication required: send Authorization: Bearer <token>", 401)
    return found


# --- iDDS relay --------------------------------------------------------------------------------


def relay_reply(ok: bool, result: Any, status: int = 200) -> JsonResponse:
    return JsonResponse([ok, result], status=status, safe=False)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for one relay call, then restored (left off if it was).

    A BPS submission of 100,000 jobs builds millions of small objects (the decoded tree, the spec,
    the job nodes), none in a reference cycle: refcounting frees them all. Left on, the collector
    walks every one of them each time the heap has grown by a quarter, about half the Python time
    of such a submission (`bench/bps_submit.py`)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@csrf_exempt
@require_POST
def relay_idds_command(request: HttpRequest) -> HttpResponse:
    """`POST /server/panda/relay_idds_command`: what ctrl_bps_panda sends to iDDS."""
    try:
        user, token = _identity(request)
    except _Unauthenticated as exc:
        return relay_reply(False, exc.message, exc.status)
    budget = relay_budget()
    try:
        with gc_paused():
            call = relay_call_parse(body_decode(request.body, budget=budget), max_depth=relay_max_depth())
            result = relay_command(call, user=user, token=token, budget=budget)
    except DecodeError as exc:
        return relay_reply(False, exc.message, exc.status)
    except RelayRefused as exc:
        return relay_reply(False, exc.message)
    except PermissionDenied as exc:
        return relay_reply(False, str(exc), 403)
    return relay_reply(True, result)


# --- panda-client ------------------------------------------------------------------------------


def envelope(success: bool, message: str = "", data: Any = None, status: int = 200) -> JsonResponse:
    return JsonResponse({"success": success, "message": message, "data": data}, status=status)


@require_GET
def is_alive(request: HttpRequest) -> HttpResponse:
    """`GET /api/v1/system/is_alive`: panda-client's `hello`; no credentials needed, as in PanDA."""
    return envelope(True, "alive")


def _submitter(request: HttpRequest) -> tuple[Any, Any] | JsonResponse:
    """(user, token) of a caller who may submit work, or the error reply in panda-client's envelope."""
    try:
        user, token = _identity(request)
        access.submit_required(user, token)
    except _Unauthenticated as exc:
        return envelope(False, exc.message, status=exc.status)
    except PermissionDenied as exc:
        return envelope(False, str(exc), status=403)
    return user, token


@csrf_exempt
@require_POST
def upload_cache_file(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/file_server/upload_cache_file` (multipart, field `file`)."""
    submitter = _submitter(request)
    if isinstance(submitter, JsonResponse):
        return submitter
    user, token = submitter
    # Before the body is parsed: a client retrying in a loop costs one cache increment per call.
    over, retry_after = rate_limit_hit(
        scope="cache_upload",
        identity=request_identity(request, token),
        rate=rate_parse(settings.AILURO_RATE_LIMITS["cache_upload"]),
    )
    if over:
        response = envelope(False, "too many uploads; retry later", status=429)
        response["Retry-After"] = str(retry_after)
        return response
    upload = request.FILES.get("file")
    if upload is None:
        return envelope(False, "no multipart field named file", status=400)
    try:
        name = cache_name_from_client(upload.name or "")
        stored = cache_file_store(owner=user, name=name, chunks=upload.chunks())
    except CacheRefused as exc:
        return envelope(False, exc.message, status=exc.status)
    return envelope(True, "", {"name": stored.name, "size": stored.size})


@csrf_exempt
@require_POST
def validate_cache_file(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/file_server/validate_cache_file` `{"file_size", "checksum"}`: `FOUND:<host>:<name>`
    when the caller already uploaded that file (panda-client then reuses it), else `NOTFOUND`."""
    submitter = _submitter(request)
    if isinstance(submitter, JsonResponse):
        return submitter
    user, token = submitter
    try:
        body = json_loads_guarded(request.body, max_depth=2)
    except JsonInputError as exc:
        return envelope(False, f"malformed JSON: {exc}", status=400)
    size = body.get("file_size") if isinstance(body, dict) else None
    checksum = body.get("checksum") if isinstance(body, dict) else None
    if not isinstance(size, int) or not isinstance(checksum, int) or not (_count(size) and _count(checksum)):
        return envelope(False, "file_size and checksum must be non-negative integers", status=400)
    name = cache_file_find(owner=user, size=size, checksum=checksum)
    if name is None:
        return envelope(True, "NOTFOUND")
    # panda-client puts the host back together with the port of its own URL (setCacheServer).
    host = request.get_host()
    hostname = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return envelope(True, f"FOUND:{hostname}:{name}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@require_GET
def cache_file_get(request: HttpRequest, name: str) -> HttpResponseBase:
    """`GET /cache/<name>`: a job downloads its sandbox. Like PanDA's cache, no credentials: the
    names carry a random UUID (docs/user-guide/coming-from-panda.md says what that implies)."""
    path = cache_path(name)
    if path is None:
        raise Http404(f"no cache file {name}")
    return FileResponse(path.open("rb"), content_type="application/octet-stream")


@require_GET
def auth_config(request: HttpRequest, vo: str) -> HttpResponse:
    """`GET /auth/<VO>_auth_config.json`: where panda-client's device-flow login starts."""
    compat = settings.AILURO_PANDACOMPAT
    vos = compat["AUTH_VOS"]
    if not settings.OIDC_ENABLED or not compat["AUTH_CLIENT_ID"] or (vos and vo not in vos):
        return JsonResponse({"detail": f"no device-flow login is configured for VO {vo!r}"}, status=404)
    return JsonResponse(
        {
            "client_id": compat["AUTH_CLIENT_ID"],
            "client_secret": "",
            "audience": compat["AUTH_AUDIENCE"] or compat["AUTH_CLIENT_ID"],
            "oidc_config_url": f"{settings.OIDC_ISSUER}/.well-known/openid-configuration",
            "vo": vo,
        }
    )
