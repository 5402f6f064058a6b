"""getJob / acquire_jobs: claim activated jobs of a queue for one pilot.

A compare-and-set transition `activated → sent` of up to n jobs, with a fresh lease per job, a
JobStatusLog row per job and the counter deltas (docs/decisions/0002), like `jobs_transition_bulk`:

* PostgreSQL: ONE prepared statement (docs/decisions/0004). `FOR UPDATE SKIP LOCKED`, so
  concurrent pilots take different rows and nobody is told "no jobs" because of a lock.
* Otherwise (SQLite, the embedded run): select, then `jobs_transition_bulk`, inside one
  transaction, which holds SQLite's write lock (IMMEDIATE transactions), so selecting first is safe.

Both return the same jobs in the same order with the same columns written.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from dispatcher.models import Job
from dispatcher.services.pilot_calls.messages import UNLIMITED, DispatchRequest
from dispatcher.services.prepared import fetch_prepared
from dispatcher.services.transitions import jobs_transition_bulk
from dispatcher.states import JobStatus

# The columns of a claimed job returned to the protocol layer (computingsite is the queue).
JOB_COLUMNS = (
    "pandaid",
    "attemptnr",
    "lease",
    "jeditaskid",
    "workflow_id",
    "name",
    "label",
    "transformation",
    "command",
    "environment",
    "container_image",
    "request_memory_mb",
    "request_cores",
    "request_walltime_s",
    "request_disk_mb",
    "prodsourcelabel",
    "currentpriority",
    "resource_type",
    "computingsite",
)


def jobs_dispatch(*, request: DispatchRequest) -> list[dict[str, Any]]:
    """Claim up to `request.n_jobs` matching activated jobs of the queue for one pilot.

    Returns the claimed jobs (the JOB_COLUMNS, with their fresh lease), highest currentpriority
    first, then oldest pandaid. Never returns a job twice; returns nothing only if no matching
    activated job is unlocked.
    """
    if request.n_jobs < 1:
        return []
    if connection.vendor == "postgresql":
        return _jobs_dispatch_postgresql(request)
    return _jobs_dispatch_generic(request)


def _decode_job_row(row: Sequence[Any]) -> dict[str, Any]:
    job = dict(zip(JOB_COLUMNS, row, strict=True))
    env = job["environment"]
    if isinstance(env, str):
        job["environment"] = json.loads(env) if env else {}
    return job


def _dispatch_params(request: DispatchRequest) -> dict[str, Any]:
    return {
        "queue": request.queue,
        "memory": min(request.memory_mb, UNLIMITED),
        "cores": min(request.cores, UNLIMITED),
        "disk": min(request.disk_mb, UNLIMITED),
        "walltime": min(request.walltime_s, UNLIMITED),
        "label": request.prodsourcelabel,
        "rtype": request.resource_type,
        "n": request.n_jobs,
        "now": timezone.now(),
        "node": request.node[:128],
        "pilot_id": request.pilot_id[:200],
        "batch_id": request.batch_id[:80],
        "worker_id": request.worker_id,
        "cause": f"dispatched to {request.node or 'a pilot'}"[:300],
    }


DISPATCH_SQL = """
WITH picked AS (
    SELECT pandaid FROM dispatcher_job
    WHERE computingsite = %(queue)s AND jobstatus = 'activated'
      AND request_memory_mb <= %(memory)s AND request_cores <= %(cores)s
      AND request_disk_mb <= %(disk)s AND request_walltime_s <= %(walltime)s
      AND (%(label)s = '' OR prodsourcelabel = %(label)s)
      AND (%(rtype)s = '' OR resource_type = %(rtype)s OR resource_type = '')
    ORDER BY currentpriority DESC, pandaid
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE dispatcher_job AS j SET
        jobstatus = 'sent',
        lease = replace(gen_random_uuid()::text, '-', ''),
        dispatched_at = %(now)s, statechangetime = %(now)s, modificationtime = %(now)s,
        modificationhost = %(node)s, pilot_id = %(pilot_id)s, batch_id = %(batch_id)s,
        worker_id = %(worker_id)s, starttime = NULL, endtime = NULL
    FROM picked WHERE j.pandaid = picked.pandaid
    RETURNING {columns}
), logged AS (
    INSERT INTO dispatcher_jobstatuslog (job_id, attemptnr, jobstatus, previous, time, cause)
    SELECT pandaid, attemptnr, 'sent', 'activated', %(now)s, %(cause)s FROM claimed
), counted AS (
    INSERT INTO dispatcher_taskcountdelta (jeditaskid, jobstatus, delta)
    SELECT c.jeditaskid, v.status, v.delta * c.n
    FROM (SELECT jeditaskid, count(*) AS n FROM claimed GROUP BY jeditaskid) AS c
    CROSS JOIN (VALUES ('activated', -1), ('sent', 1)) AS v(status, delta)
)
SELECT * FROM claimed ORDER BY currentpriority DESC, pandaid
""".format(columns=", ".join(f"j.{c}" for c in JOB_COLUMNS))  # noqa: S608  (our column names, no values)


# The plan the dispatch statement must keep: the queue's activated jobs walked in dispatch order
# (job_activated_dispatch_idx), stopping at the jobs taken. Its generic plan is made from the
# statistics of the moment, where a queue's activated jobs can look like one row or less (a
# table of millions of ended jobs; the fit conditions, of unknown values, a third each): reading
# them all and sorting them then seems as cheap, and with a backlog it costs every dispatch the
# whole backlog. Sorts and bitmap scans are priced out for the statement's transaction, the only
# place that plan is made (or remade after an ANALYZE): tests/dispatcher/test_dispatch_plan.py.
ORDERED_WALK_SQL = "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"


def _jobs_dispatch_postgresql(request: DispatchRequest) -> list[dict[str, Any]]:
    rows = fetch_prepared(DISPATCH_SQL, _dispatch_params(request), local_settings=ORDERED_WALK_SQL)
    return [_decode_job_row(row) for row in rows]


@transaction.atomic
def _jobs_dispatch_generic(request: DispatchRequest) -> list[dict[str, Any]]:
    p = _dispatch_params(request)
    selection = Job.objects.filter(
        queue_id=request.queue,
        jobstatus=JobStatus.ACTIVATED,
        request_memory_mb__lte=p["memory"],
        request_cores__lte=p["cores"],
        request_disk_mb__lte=p["disk"],
        request_walltime_s__lte=p["walltime"],
    )
    if request.prodsourcelabel:
        selection = selection.filter(prodsourcelabel=request.prodsourcelabel)
    if request.resource_type:
        selection = selection.filter(resource_type__in=[request.resource_type, ""])
    ids = list(
        selection.order_by("-currentpriority", "pandaid").values_list("pandaid", flat=True)[: request.n_jobs]
    )
    if not ids:
        return []
    jobs_transition_bulk(
        source=JobStatus.ACTIVATED,
        to=JobStatus.SENT,
        cause=p["cause"],
        pandaids=ids,
        fields={
            "dispatched_at": p["now"],
            "heartbeat_at": p["now"],
            "node": p["node"],
            "pilot_id": p["pilot_id"],
            "batch_id": p["batch_id"],
            "worker_id": p["worker_id"],
            "starttime": None,
            "endtime": None,
        },
    )
    for pandaid in ids:
        Job.objects.filter(pandaid=pandaid).update(lease=secrets.token_hex(16))
    columns = [
        ("queue_id" if c == "computingsite" else "task_id" if c == "jeditaskid" else c) for c in JOB_COLUMNS
    ]
    rows = Job.objects.filter(pandaid__in=ids).order_by("-currentpriority", "pandaid").values_list(*columns)
    return [_decode_job_row(row) for row in rows]
