"""The pilot protocol's process-local Prometheus families (core/metrics.py says how they are
gathered): calls by operation and status, their latency, and the jobs they carried.

Recorded by `views._pilot_view` and `pilot.py` on the hot path: a call costs one histogram
observation, one counter increment and, for the jobs, one increment per kind present. The label
children are bound once here, so recording is a dictionary lookup and an add.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

# Operation of each pilot view (both APIs, legacy and v1, count as the same operation).
OPERATIONS: dict[str, str] = {
    "legacy_get_job": "dispatch",
    "acquire_jobs": "dispatch",
    "legacy_update_job": "update",
    "update_job": "update",
    "legacy_update_jobs_in_bulk": "update_bulk",
    "update_jobs_bulk": "update_bulk",
    "legacy_get_status": "job_status",
    "get_job_status": "job_status",
    "legacy_update_worker_pilot_status": "worker_status",
    "update_worker_status": "worker_status",
}

# Pilot calls answer in milliseconds; a bulk update of 1000 jobs in a few hundred.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PILOT_CALLS = Counter(
    "ailuro_pilot_calls",
    "Pilot protocol calls by operation (dispatch, update, update_bulk, job_status, worker_status) "
    "and HTTP status.",
    ["op", "status"],
    registry=None,
)
PILOT_SECONDS = Histogram(
    "ailuro_pilot_call_duration_seconds",
    "Time a pilot protocol call spent in its view (authentication, decoding, the service, the answer).",
    ["op"],
    buckets=BUCKETS,
    registry=None,
)
PILOT_JOBS = Counter(
    "ailuro_pilot_jobs",
    "Jobs carried by pilot calls: dispatched to pilots, heartbeats (an update to a non-final "
    "state) and final updates (finished or failed) received.",
    ["kind"],
    registry=None,
)
PROCESS_LOCAL: tuple[Collector, ...] = (PILOT_CALLS, PILOT_SECONDS, PILOT_JOBS)

SECONDS_BY_OP = {op: PILOT_SECONDS.labels(op) for op in set(OPERATIONS.values())}
JOBS_DISPATCHED = PILOT_JOBS.labels("dispatch")
JOBS_HEARTBEAT = PILOT_JOBS.labels("heartbeat")
JOBS_FINAL = PILOT_JOBS.labels("final")
FINAL_STATES = frozenset({"finished", "failed"})


_CALLS_BY_OP_STATUS: dict[tuple[str, int], Counter] = {}


def call_record(op: str, status: int, seconds: float) -> None:
    """One call of `op` answered with `status` after `seconds`: an observation and an increment."""
    SECONDS_BY_OP[op].observe(seconds)
    calls = _CALLS_BY_OP_STATUS.get((op, status))
    if calls is None:  # the first call with this status: bind its child once
        calls = _CALLS_BY_OP_STATUS.setdefault((op, status), PILOT_CALLS.labels(op, str(status)))
    calls.inc()
