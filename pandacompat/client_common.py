"""What panda-client's job and task views share: who calls, the JSON body, the server's own URL."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse

from core.parsers import JsonInputError, json_loads_guarded
from dispatcher import access
from pandacompat.views import _identity, _Unauthenticated, envelope

MAX_IDS = 1000


class BadRequest(Exception):
    """A request the view answers 400 (or `status`) with `message` in panda-client's envelope."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def reply(self) -> JsonResponse:
        return envelope(False, self.message, status=self.status)


def caller(request: HttpRequest, *, submit: bool = False) -> tuple[Any, Any] | JsonResponse:
    """(user, token) of a caller who may read the user API (and submit, with `submit`), or the
    401/403/503 reply in panda-client's envelope."""
    try:
        user, token = _identity(request)
        if submit:
            access.submit_required(user, token)
        else:
            access.read_required(user, token)
    except _Unauthenticated as exc:
        response = envelope(False, exc.message, status=exc.status)
        if exc.status == 503:  # the identity provider is down: the token may be fine
            response["Retry-After"] = str(settings.AILURO_RETRY_AFTER_S)
        return response
    except PermissionDenied as exc:
        return envelope(False, str(exc), status=403)
    return user, token


def json_object(request: HttpRequest, *, max_depth: int = 8) -> dict[str, Any]:
    try:
        body = json_loads_guarded(request.body, max_depth=max_depth)
    except JsonInputError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def id_list(body: dict[str, Any], key: str) -> list[int]:
    """`body[key]` as a list of at most MAX_IDS positive integers (digit strings accepted)."""
    raw = body.get(key)
    if not isinstance(raw, list) or not raw:
        raise BadRequest(f"{key} must be a non-empty list of ids")
    if len(raw) > MAX_IDS:
        raise BadRequest(f"{key} has {len(raw)} ids; the limit is {MAX_IDS}")
    return [positive_id(value, f"{key}[{i}]") for i, value in enumerate(raw)]


def positive_id(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise BadRequest(f"{where} must be a positive integer id, got {str(value)[:40]!r}")
    return value


def source_url(request: HttpRequest) -> str:
    """The URL jobs fetch sandboxes from: AILURO_PANDA_SOURCE_URL when set (a server behind a
    proxy whose workers see another name), else the scheme and host this request came to."""
    configured = str(settings.AILURO_PANDACOMPAT.get("SOURCE_URL") or "")
    return configured.rstrip("/") or f"{request.scheme}://{request.get_host()}"
