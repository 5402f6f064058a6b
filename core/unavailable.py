"""A dependency that is down: which exceptions mean "the database (or the broker) is unavailable,
retry later" rather than a bug, and the 503 + Retry-After answer each interface gives for them.

`unavailable_dependency(exc)` decides by exception type (and PostgreSQL's SQLSTATE), never by
message: the connection could not be made or was lost (psycopg's connection-level errors, which
carry no SQLSTATE, and class 08), the server is shutting down or starting (57P01–57P03), or it
takes no more connections (53300). Anything else — a constraint violation, a syntax error, a
missing table, a statement timeout — stays what it is (a 500 when nobody handles it), but for the
statement timeout in a pilot-lane process (settings.AILURO_WEB_ROLE "pilot"), which is that lane's
time limit: a database too busy to answer a pilot call within it is unavailable to that call.

`unavailable_response(request, part)` is the answer in the caller's own format: the pilot
protocol's and panda-client's envelopes, the REST API's `{"detail": …}`, the monitor's `{"error": …}` for `?json`, a
fragment for htmx, a plain HTML page otherwise. It renders no template and touches no database
(the page's base template would look up the logged-in user).
"""

from __future__ import annotations

import logging
import sqlite3

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

DATABASE = "database"
BROKER = "broker"

# SQLSTATEs of a server that is there but cannot serve: shutting down or starting up, or full.
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
_CONNECTION_CLASS = "08"  # connection exception


def _psycopg_unavailable(error: psycopg.Error) -> bool:
    if isinstance(error, psycopg.InterfaceError):
        return True  # the connection object is closed or broken
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate
    if sqlstate is None:  # raised by the client: connection refused, lost, or reset
        return True
    return sqlstate.startswith(_CONNECTION_CLASS) or sqlstate in _UNAVAILABLE_SQLSTATES


def _pilot_lane_time_limit(error: psycopg.Error) -> bool:
    return settings.AILURO_WEB_ROLE == "pilot" and isinstance(error, psycopg.errors.QueryCanceled)


def _database_unavailable(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    if isinstance(cause, psycopg.Error):
        return _psycopg_unavailable(cause) or _pilot_lane_time_limit(cause)
    if isinstance(cause, sqlite3.OperationalError):
        # The embedded database: another process held the write lock past the busy timeout.
        return getattr(cause, "sqlite_errorcode", None) in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
    # Django's own InterfaceError (a connection it already knows is unusable).
    return isinstance(exc, InterfaceError) and cause is None


def _broker_unavailable(exc: BaseException) -> bool:
    # Imported here: kombu and redis are the broker's libraries, loaded only where one is used.
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, KombuOperationalError | RedisConnectionError | RedisTimeoutError)


def unavailable_dependency(exc: BaseException) -> str | None:
    """DATABASE or BROKER when `exc` says that dependency is unavailable, else None."""
    if isinstance(exc, OperationalError | InterfaceError | psycopg.Error):
        return DATABASE if _database_unavailable(exc) else None
    if _broker_unavailable(exc):
        return BROKER
    return None


def discard_broken_connections() -> None:
    """Close every database connection of this thread that saw an error, so the next request
    connects afresh (Django would also do it when the request finishes; this does not wait)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or not conn.errors_occurred or conn.in_atomic_block:
            continue
        try:
            conn.close()
        except DatabaseError:  # closing a lost connection can fail too; it is dropped either way
            conn.connection = None


def retry_after_s() -> int:
    return int(settings.AILURO_RETRY_AFTER_S)


def _message(part: str, retry_after: int) -> str:
    return f"the {part} is unavailable; retry in {retry_after} s"


def _wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "json" in request.GET or accept.startswith(("application/json", "text/json"))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Service unavailable · ailuro</title></head>
<body><h1>Service unavailable</h1>
<p>The {part} is unavailable. Please retry shortly (in about {seconds} seconds).</p>
<p><a href="">Retry</a></p></body></html>
"""


def _v1_envelope(message: str) -> JsonResponse:
    return JsonResponse({"success": False, "message": message, "data": None}, status=503)


def _legacy_envelope(message: str) -> JsonResponse:
    # StatusCode 30 is the legacy protocol's "failed"; the HTTP status says "retry".
    return JsonResponse({"StatusCode": 30, "errorDialog": message}, status=503)


def _relay_envelope(message: str) -> JsonResponse:
    return JsonResponse([False, message], status=503, safe=False)


def _rest_error(message: str) -> JsonResponse:
    return JsonResponse({"detail": message}, status=503)


# The JSON interfaces by path prefix, first match wins: the pilot protocol (v1 and legacy),
# panda-client's calls and the iDDS relay (pandacompat), then the REST API's one error format.
_JSON_FORMATS = (
    ("/server/panda/relay_idds_command", _relay_envelope),
    ("/server/panda/", _legacy_envelope),
    ("/api/v1/pilot/", _v1_envelope),
    ("/api/v1/system/", _v1_envelope),
    ("/api/v1/file_server/", _v1_envelope),
    ("/api/", _rest_error),
)


def _reply(request: HttpRequest, part: str, seconds: int) -> HttpResponse:
    message = _message(part, seconds)
    for prefix, reply in _JSON_FORMATS:
        if request.path.startswith(prefix):
            return reply(message)
    if _wants_json(request):  # the monitor's `?json`
        return JsonResponse({"error": message}, status=503)
    if request.headers.get("HX-Request") == "true":
        return HttpResponse(f'<p class="error">{message[0].upper()}{message[1:]}.</p>', status=503)
    return HttpResponse(_PAGE.format(part=part, seconds=seconds), status=503)


def unavailable_response(request: HttpRequest, part: str) -> HttpResponse:
    """The 503 with Retry-After for `part` (DATABASE or BROKER) in the format of `request.path`."""
    seconds = retry_after_s()
    response = _reply(request, part, seconds)
    response["Retry-After"] = str(seconds)
    response["Cache-Control"] = "no-store"
    return response


def answer_unavailable(request: HttpRequest, exception: BaseException, part: str) -> HttpResponse:
    """The request failed because `part` is unavailable: log one warning line (no traceback),
    drop the broken database connections, and answer the 503."""
    first_line = (str(exception).strip().splitlines() or [""])[0][:200]
    log.warning(
        "%s unavailable: %s %s answered 503 (%s: %s)",
        part,
        request.method,
        request.path,
        type(exception).__name__,
        first_line,
        extra={"event": "dependency.unavailable", "part": part, "path": request.path, "status": 503},
    )
    discard_broken_connections()
    response = unavailable_response(request, part)
    # The warning above is this request's log line: Django's handler would add an ERROR line
    # ("Service Unavailable: …", with the traceback from handler500) for a 5xx not logged yet.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
