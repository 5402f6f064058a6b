"""The one implementation of the pilot calls, shared by the legacy and the v1 adapters.

Each function takes the decoded parameters (legacy camelCase and v1 snake_case names are both
read, pilot-protocol.md §4.1 / §5.2 / §5.3), types them, calls one service and returns plain data;
the adapters in `views.py` only wrap it in their envelope.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from dispatcher.protocol import metrics
from dispatcher.protocol.auth import PilotIdentity, check_queue
from dispatcher.protocol.codec import (
    ProtocolError,
    as_bounded_int,
    as_float,
    as_int,
    as_str,
    as_time,
    json_loads,
    pick,
)
from dispatcher.queries import jobs_status_for_pilot, queue_exists
from dispatcher.services.pilot_calls import (
    PILOT_STATES,
    UNLIMITED,
    DispatchRequest,
    ForeignJob,
    PilotUpdate,
    UpdateReply,
    job_pilot_update,
    jobs_dispatch,
    jobs_pilot_update_bulk,
)

MAX_BULK = 1000  # jobs per bulk update call
NO_JOBS = "no jobs in PanDA"


def _limit_mb(value: float | None) -> int:
    """A pilot limit in MB; 0 or absent means "not given" (case J sends diskSpace 0)."""
    if value is None or value <= 0:
        return UNLIMITED
    return min(int(value), UNLIMITED)


def dispatch_request(params: Mapping[str, Any], identity: PilotIdentity, *, max_jobs: int) -> DispatchRequest:
    queue = as_str(params, "siteName", "site_name") or as_str(params, "computingElement", "computing_element")
    if not queue:
        raise ProtocolError("siteName (site_name) is required: the queue to take jobs from")
    check_queue(identity, queue)
    n_jobs = as_bounded_int(params, "nJobs", "n_jobs", low=1, high=max_jobs, default=1) or 1
    remaining = as_float(params, "remaining_time", "remainingTime")
    cores = as_bounded_int(params, "coreCount", "core_count", low=0, default=0) or 0
    label = as_str(params, "prodSourceLabel", "prod_source_label")
    return DispatchRequest(
        queue=queue,
        n_jobs=n_jobs,
        memory_mb=_limit_mb(as_float(params, "mem", "memory")),
        disk_mb=_limit_mb(as_float(params, "diskSpace", "disk_space")),
        cores=cores if cores > 0 else UNLIMITED,
        walltime_s=_limit_mb(remaining),
        prodsourcelabel="" if label in ("", "any") else label,
        resource_type=as_str(params, "resourceType", "resource_type", limit=32),
        node=as_str(params, "node", limit=128),
        pilot_id=as_str(params, "pilotID", "pilot_id", limit=200),
        batch_id=as_str(params, "batchID", "batch_id", limit=80),
        worker_id=as_int(params, "worker_id", "workerID"),
    )


def job_pars(job: Mapping[str, Any]) -> str:
    """The job's command as arguments of the wrapper: `[env K=V …] bash -c '<command>'`."""
    env = job.get("environment") or {}
    prefix = ""
    if env:
        prefix = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items())) + " "
    return f"{prefix}bash -c {shlex.quote(job['command'])}"


def job_description(job: Mapping[str, Any], *, trf_base_url: str) -> dict[str, Any]:
    """The job as the pilot expects it (pilot-protocol.md §4.2) plus ailuro's own fields."""
    trf = job["transformation"] or "runpayload.sh"
    if "://" not in trf:
        trf = f"{trf_base_url.rstrip('/')}/{trf.lstrip('/')}"
    description: dict[str, Any] = {
        "StatusCode": 0,
        "PandaID": job["pandaid"],
        "attemptNr": job["attemptnr"],
        "lease": job["lease"],
        "jobName": job["name"],
        "taskID": job["jeditaskid"],
        "jobsetID": job["workflow_id"],
        "jobDefinitionID": job["workflow_id"],
        "reqID": job["workflow_id"],
        "prodSourceLabel": job["prodsourcelabel"],
        "processingType": job["label"],
        "transformation": trf,
        "jobPars": job_pars(job),
        "coreCount": job["request_cores"],
        "minRamCount": job["request_memory_mb"],
        "maxDiskCount": job["request_disk_mb"],
        "maxWalltime": job["request_walltime_s"],
        "maxCpuCount": job["request_walltime_s"] * job["request_cores"],
        "currentPriority": job["currentpriority"],
        "resource_type": job["resource_type"] or "NULL",
        "computingSite": job["computingsite"],
        "swRelease": "NULL",
        "homepackage": "NULL",
        "cmtConfig": "NULL",
        "inFiles": "",
        "outFiles": "",
        "nSent": 0,
        # ailuro pilot: the command and environment without the wrapper's quoting.
        "command": job["command"],
        "environment": job.get("environment") or {},
    }
    if job.get("container_image"):
        description["container_name"] = job["container_image"]
    return description


def acquire(
    params: Mapping[str, Any], identity: PilotIdentity, *, trf_base_url: str, max_jobs: int
) -> tuple[list[dict[str, Any]], str]:
    """Jobs for the pilot, and the reason when there are none."""
    request = dispatch_request(params, identity, max_jobs=max_jobs)
    jobs = jobs_dispatch(request=request)
    if jobs:
        metrics.JOBS_DISPATCHED.inc(len(jobs))
        return [job_description(job, trf_base_url=trf_base_url) for job in jobs], ""
    if not queue_exists(request.queue):
        return [], f"{NO_JOBS}: unknown queue {request.queue!r}"
    return [], NO_JOBS


_ERROR_FIELDS = {
    # column: (legacy name, v1 name)
    "piloterrorcode": ("pilotErrorCode", "pilot_error_code"),
    "piloterrordiag": ("pilotErrorDiag", "pilot_error_diag"),
    "exeerrorcode": ("exeErrorCode", "exe_error_code"),
    "exeerrordiag": ("exeErrorDiag", "exe_error_diag"),
    "transexitcode": ("transExitCode", "trans_exit_code"),
    "superrorcode": ("supErrorCode", "sup_error_code"),
    "superrordiag": ("supErrorDiag", "sup_error_diag"),
    "ddmerrorcode": ("ddmErrorCode", "ddm_error_code"),
    "ddmerrordiag": ("ddmErrorDiag", "ddm_error_diag"),
}

_ERROR_NAMES = frozenset(name for names in _ERROR_FIELDS.values() for name in names)


def pilot_update(params: Mapping[str, Any]) -> PilotUpdate:
    pandaid = as_int(params, "jobId", "job_id", "PandaID")
    if pandaid is None:
        raise ProtocolError("jobId (job_id) is required: the PandaID of the job")
    status = as_str(params, "state", "job_status")
    if not status:
        raise ProtocolError("state (job_status) is required")
    if status == "transferring":
        status = "holding"
    if status not in PILOT_STATES:
        raise ProtocolError(f"state {status[:40]!r} is not one of {', '.join(sorted(PILOT_STATES))}")
    attemptnr = as_bounded_int(params, "attemptNr", "attempt_nr", low=0, high=1_000_000)
    if attemptnr is None:
        raise ProtocolError("attemptNr (attempt_nr) is required: echo the one of the job description")
    cores = as_float(params, "meanCoreCount", "mean_core_count")
    if cores is None:
        cores = as_float(params, "coreCount", "core_count")
    metrics = {
        "cpu_time_s": as_float(params, "cpuConsumptionTime", "cpu_consumption_time"),
        "max_rss_kb": as_bounded_int(params, "maxRSS", "max_rss", low=0, high=2**62),
        "max_pss_kb": as_bounded_int(params, "maxPSS", "max_pss", low=0, high=2**62),
        "actual_cores": cores,
    }
    errors: dict[str, Any] = {}
    if status in ("finished", "failed") and not params.keys().isdisjoint(_ERROR_NAMES):
        for column, names in _ERROR_FIELDS.items():
            if params.keys().isdisjoint(names):
                continue  # most updates carry a few of the nine; skip the others cheaply
            if column.endswith("diag"):
                text = as_str(params, *names, limit=500)
                if text:
                    errors[column] = text
            else:
                code = as_bounded_int(params, *names)
                if code:
                    # PanDA stores abs() of negative pilot codes (negative = recoverable user error).
                    errors[column] = abs(code) if column != "transexitcode" else code
    return PilotUpdate(
        pandaid=pandaid,
        status=status,
        attemptnr=attemptnr,
        lease=as_str(params, "lease", limit=64),
        node=as_str(params, "node", limit=128),
        pilot_id=as_str(params, "pilotID", "pilot_id", limit=200),
        batch_id=as_str(params, "batchID", "batch_id", limit=80),
        starttime=as_time(params, "startTime", "start_time"),
        endtime=as_time(params, "endTime", "end_time"),
        metrics=metrics,
        errors=errors,
    )


def update(params: Mapping[str, Any], identity: PilotIdentity) -> UpdateReply:
    """One updateJob; ProtocolError 403 for a job of a queue the token is not bound to."""
    parsed = pilot_update(params)
    (metrics.JOBS_FINAL if parsed.status in metrics.FINAL_STATES else metrics.JOBS_HEARTBEAT).inc()
    try:
        return job_pilot_update(update=parsed, queues=identity.queues)
    except ForeignJob as exc:
        raise ProtocolError(str(exc), 403) from None


def bulk_list(params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = pick(params, "jobList", "job_list")
    if raw is None:
        raise ProtocolError("jobList (job_list) is required: a JSON list of updates")
    if isinstance(raw, str):
        raw = json_loads(raw, what="jobList")
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ProtocolError("jobList (job_list) must be a list of objects")
    if len(raw) > MAX_BULK:
        raise ProtocolError(f"jobList (job_list) holds {len(raw)} updates; at most {MAX_BULK} per call")
    return raw


def update_bulk(
    params: Mapping[str, Any], identity: PilotIdentity
) -> list[tuple[UpdateReply | None, str, int]]:
    """Each update judged on its own: (reply, error message, HTTP-like status) per entry, in order.
    Entries that do not parse are refused alone; the others are applied in one bulk call."""
    results: list[tuple[UpdateReply | None, str, int]] = []
    parsed: list[PilotUpdate] = []
    for item in bulk_list(params):
        try:
            parsed.append(pilot_update(item))
            results.append((None, "", 0))
        except ProtocolError as exc:
            results.append((None, exc.message, exc.status))
    finals = sum(1 for update in parsed if update.status in metrics.FINAL_STATES)
    if finals:
        metrics.JOBS_FINAL.inc(finals)
    if len(parsed) > finals:
        metrics.JOBS_HEARTBEAT.inc(len(parsed) - finals)
    replies = iter(jobs_pilot_update_bulk(updates=parsed, queues=identity.queues))
    for i, (_, _, status) in enumerate(results):
        if status == 0:
            reply = next(replies)
            if isinstance(reply, ForeignJob):
                results[i] = (None, str(reply), 403)
            else:
                results[i] = (reply, "", 200)
    return results


def job_ids(params: Mapping[str, Any]) -> list[int]:
    raw = pick(params, "ids", "job_ids")
    if raw is None:
        raise ProtocolError("ids (job_ids) is required")
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            parsed = json_loads(text, what="job_ids")
            items: list[Any] = parsed if isinstance(parsed, list) else [parsed]
        else:
            items = text.replace(",", " ").replace("+", " ").split()
    elif isinstance(raw, list):
        items = raw
    else:
        items = [raw]
    if len(items) > MAX_BULK:
        raise ProtocolError(f"at most {MAX_BULK} ids per call")
    return [as_int({"ids": item}, "ids") or 0 for item in items]


def job_status(params: Mapping[str, Any], identity: PilotIdentity) -> list[tuple[int, str, int]]:
    ids = job_ids(params)
    known = jobs_status_for_pilot(ids, queues=identity.queues)
    return [(pandaid, *known.get(pandaid, ("unknown", 0))) for pandaid in ids]
