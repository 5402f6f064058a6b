"""Pilot-side extras of the v1 API served by the harvester app: payload output chunks."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.auth import api_token_lookup, bearer_from_request
from core.parsers import json_loads_guarded
from core.roles import Role, role_allows, user_roles
from harvester.services import MAX_CHUNK_BYTES, QueueNotAllowed, StaleDispatch, payload_log_append

_MAX_BODY = MAX_CHUNK_BYTES * 2 + 4096  # JSON escaping may double the text


def _reply(status: int, message: str, data: Any = None) -> JsonResponse:
    return JsonResponse({"success": status < 400, "message": message, "data": data}, status=status)


def _int_field(doc: dict[str, Any], name: str, minimum: int) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} is required and must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


@csrf_exempt
@require_POST
def append_log(request: HttpRequest) -> JsonResponse:
    """POST /api/v1/pilot/append_log {job_id, attempt_nr, lease, sequence, text} (pilot token)."""
    raw = bearer_from_request(request)
    token = api_token_lookup(raw) if raw else None
    if token is None:
        return _reply(401, "a valid pilot token is required (Authorization: Bearer …)")
    if not role_allows(user_roles(token.user, token), Role.PILOT):
        return _reply(403, f"token role {token.role!r} may not send payload logs; a pilot token is needed")
    if len(request.body) > _MAX_BODY:
        return _reply(413, f"request body over {_MAX_BODY} bytes; send chunks of at most {MAX_CHUNK_BYTES}")
    try:
        doc = json_loads_guarded(request.body or b"null")  # depth, NaN, NUL and surrogates: a 400
        if not isinstance(doc, dict):
            raise ValueError("body must be a JSON object")
        pandaid = _int_field(doc, "job_id", 1)
        attemptnr = _int_field(doc, "attempt_nr", 1)
        sequence = _int_field(doc, "sequence", 1)
        lease, text = doc.get("lease"), doc.get("text")
        if not isinstance(lease, str) or not lease:
            raise ValueError("lease is required: the token of the dispatch, as acquire_jobs sent it")
        if not isinstance(text, str):
            raise ValueError("text is required and must be a string")
    except ValueError as exc:
        return _reply(400, str(exc))
    if len(text.encode()) > MAX_CHUNK_BYTES:
        return _reply(413, f"text is {len(text.encode())} bytes; at most {MAX_CHUNK_BYTES} per chunk")
    try:
        result = payload_log_append(
            pandaid=pandaid,
            attemptnr=attemptnr,
            lease=lease,
            sequence=sequence,
            text=text,
            queues=list(token.queues or []),
        )
    except StaleDispatch as exc:
        return _reply(409, str(exc))
    except QueueNotAllowed as exc:
        return _reply(403, str(exc))
    return _reply(
        200,
        "capped" if result.capped else "stored",
        {
            "StatusCode": 0,
            "stored_bytes": result.stored_bytes,
            "total_bytes": result.total_bytes,
            "capped": result.capped,
            "duplicate": result.duplicate,
        },
    )
