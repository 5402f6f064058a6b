"""The two thin adapters of the pilot protocol (legacy `/server/panda/*`, v1 `/api/v1/pilot/*`)
and the static resources a pilot downloads (`/cache/*`, `/trf/*`).

Plain Django views, no DRF: these are the hot path (docs/architecture.md "Hot paths"). Each view authenticates, decodes,
calls one function of `pilot.py` and wraps the result in its API's envelope. Bad input is a
`ProtocolError` answered with its 4xx and a message, in the envelope of the API asked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from dispatcher.models import Site
from dispatcher.protocol import metrics, pilot
from dispatcher.protocol.auth import PilotIdentity, pilot_authenticate
from dispatcher.protocol.codec import ProtocolError, request_params
from dispatcher.protocol.queuedata import TRF_SCRIPTS, ddmendpoints, queuedata
from dispatcher.queries import queue_for_pilot

log = logging.getLogger(__name__)

Handler = Callable[[HttpRequest, dict[str, Any], PilotIdentity], Any]

# Legacy StatusCode for protocol errors (panda-server Protocol.py): 50 invalid token, 70 permission
# denied, 30 failed.
_LEGACY_CODES = {401: 50, 403: 70}


def _json(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json"
    )


def _trf_base_url(request: HttpRequest) -> str:
    configured = str(settings.AILURO_PILOT["TRF_BASE_URL"])
    return configured or request.build_absolute_uri("/trf/user/")


def _max_jobs() -> int:
    return int(settings.AILURO_PILOT["MAX_JOBS_PER_CALL"])


def _pilot_answer(
    request: HttpRequest, handler: Handler, *, legacy: bool, methods: tuple[str, ...]
) -> HttpResponse:
    """Authenticate, decode, run the handler; a ProtocolError becomes the API's error envelope."""
    try:
        if request.method not in methods:
            raise ProtocolError(f"use {' or '.join(methods)}", 405)
        identity = pilot_authenticate(request)
        try:
            params = request_params(request)
        except RequestDataTooBig:
            raise ProtocolError("request body too large", 413) from None
        return _json(handler(request, params, identity))
    except ProtocolError as exc:
        log.info(
            "pilot call refused: %s",
            exc.message,
            extra={"event": "pilot.refused", "path": request.path, "status": exc.status},
        )
        if legacy:
            body = {"StatusCode": _LEGACY_CODES.get(exc.status, 30), "errorDialog": exc.message}
        else:
            body = {"success": False, "message": exc.message, "data": None}
        return _json(body, exc.status)


def _pilot_view(
    *, legacy: bool, methods: tuple[str, ...] = ("POST",)
) -> Callable[[Handler], Callable[[HttpRequest], HttpResponse]]:
    """The view of a handler: `_pilot_answer`, timed and counted by operation and status
    (`dispatcher.protocol.metrics`)."""

    def wrap(handler: Handler) -> Callable[[HttpRequest], HttpResponse]:
        op = metrics.OPERATIONS[handler.__name__]

        @csrf_exempt
        def view(request: HttpRequest) -> HttpResponse:
            start = time.perf_counter()
            status = 500  # an exception leaves the view (a database that is down: a 503 outside)
            try:
                response = _pilot_answer(request, handler, legacy=legacy, methods=methods)
                status = response.status_code
                return response
            finally:
                metrics.call_record(op, status, time.perf_counter() - start)

        view.__name__ = handler.__name__
        view.__doc__ = handler.__doc__
        return view

    return wrap


def _envelope(data: Any, *, success: bool = True, message: str = "") -> dict[str, Any]:
    return {"success": success, "message": message, "data": data}


# --- legacy /server/panda/* ---------------------------------------------------------------------


@_pilot_view(legacy=True)
def legacy_get_job(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    jobs, reason = pilot.acquire(params, identity, trf_base_url=_trf_base_url(request), max_jobs=_max_jobs())
    if not jobs:
        return {"StatusCode": 20, "errorDialog": reason}
    if "nJobs" in params:  # Harvester's bulk form
        return {"StatusCode": 0, "jobs": jobs}
    return jobs[0]


def _legacy_update_reply(reply: Any) -> dict[str, Any]:
    return {"StatusCode": 0, "command": reply.command or "NULL"}


@_pilot_view(legacy=True)
def legacy_update_job(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    return _legacy_update_reply(pilot.update(params, identity))


@_pilot_view(legacy=True)
def legacy_update_jobs_in_bulk(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    replies = []
    for reply, message, status in pilot.update_bulk(params, identity):
        if reply is None:
            replies.append({"StatusCode": _LEGACY_CODES.get(status, 30), "errorDialog": message})
        else:
            replies.append(_legacy_update_reply(reply))
    return [True, replies]


@_pilot_view(legacy=True, methods=("GET", "POST"))
def legacy_get_status(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    rows = pilot.job_status(params, identity)
    return {
        "StatusCode": 0,
        "status": "+".join(status for _, status, _ in rows),
        "attemptNr": "+".join(str(attempt) for _, _, attempt in rows),
    }


@_pilot_view(legacy=True)
def legacy_update_worker_pilot_status(
    request: HttpRequest, params: dict[str, Any], identity: PilotIdentity
) -> Any:
    _log_worker_status(params)
    return {"StatusCode": 0}


# --- v1 /api/v1/pilot/* -------------------------------------------------------------------------


@_pilot_view(legacy=False)
def acquire_jobs(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    jobs, reason = pilot.acquire(params, identity, trf_base_url=_trf_base_url(request), max_jobs=_max_jobs())
    if not jobs:
        return _envelope(None, success=False, message=reason.replace(pilot.NO_JOBS, "No jobs in PanDA"))
    return _envelope({"StatusCode": 0, "jobs": jobs})


@_pilot_view(legacy=False)
def update_job(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    reply = pilot.update(params, identity)
    return _envelope({"StatusCode": 0, "command": reply.command})


@_pilot_view(legacy=False)
def update_jobs_bulk(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    data = []
    for reply, message, status in pilot.update_bulk(params, identity):
        if reply is None:
            data.append({"success": False, "message": message, "status": status, "data": None})
        else:
            data.append(_envelope({"StatusCode": 0, "command": reply.command}))
    return _envelope(data)


@_pilot_view(legacy=False, methods=("GET", "POST"))
def get_job_status(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    rows = pilot.job_status(params, identity)
    return _envelope(
        [
            {"job_id": pandaid, "status": status, "attempt_number": attempt}
            for pandaid, status, attempt in rows
        ]
    )


@_pilot_view(legacy=False)
def update_worker_status(request: HttpRequest, params: dict[str, Any], identity: PilotIdentity) -> Any:
    _log_worker_status(params)
    return _envelope(None)


def _log_worker_status(params: dict[str, Any]) -> None:
    # Worker rows belong to harvester/; the pilot's started/finished report is logged for now.
    log.info(
        "pilot of worker %s reports %s",
        str(params.get("workerID") or params.get("worker_id") or "")[:40],
        str(params.get("status") or "")[:20],
        extra={
            "event": "pilot.worker_status",
            "harvester_id": str(params.get("harvesterID") or params.get("harvester_id") or "")[:100],
            "node": str(params.get("node_id") or "")[:128],
        },
    )


# --- static resources (GET, no credential: the pilot fetches them without one, §2.4) --------------


def schedconfig(request: HttpRequest, queue: str) -> HttpResponse:
    record = queue_for_pilot(queue)
    if record is None:
        return _json({"error": f"unknown queue {queue!r}"}, 404)
    return _json(queuedata(record))


def ddm_endpoints(request: HttpRequest) -> HttpResponse:
    sites = list(Site.objects.order_by("name").values_list("name", flat=True))
    return _json(ddmendpoints(sites, path=str(settings.AILURO_PILOT["SE_PATH"])))


def trf_script(request: HttpRequest, name: str) -> HttpResponse:
    script = TRF_SCRIPTS.get(name)
    if script is None:
        raise Http404(f"no transformation {name!r}")
    return HttpResponse(script, content_type="text/x-shellscript")
