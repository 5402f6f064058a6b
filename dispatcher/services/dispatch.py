"""The pilot hot path (DESIGN §4): dispatch, heartbeat and final update.

Dispatch and heartbeat are specialised, set-based versions of `jobs_transition_bulk` /
`job_transition`, written for PostgreSQL as ONE statement each. They keep the same guarantees:

* compare-and-set: the dispatch claims only `activated` rows (`FOR UPDATE SKIP LOCKED`, so
  concurrent pilots take different rows and nobody is told "no jobs" because of a lock), and the
  heartbeat updates only the row whose (pandaid, attemptnr, lease, queue) fence matches and whose
  state is in flight; a state never goes backwards (sent < starting < running < holding);
* a JobStatusLog row for every status change, in the same statement;
* counter deltas (TaskCountDelta, exactly what `task_count_deltas_add` writes) in the same
  statement.

On SQLite (the embedded run, one writer at a time under IMMEDIATE transactions) the same
operations go through `jobs_transition_bulk` / `job_transition` inside one transaction.

The final update: `finished` on PostgreSQL is one statement too (`finish.jobs_finish_postgresql`,
also set-based for bulk updates); `failed` (retry decision, pruning) and SQLite go through
`job_attempt_end` after the same fence.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from dispatcher.models import Job
from dispatcher.services.attempts import job_attempt_end
from dispatcher.services.finish import IN_FLIGHT, jobs_finish_postgresql
from dispatcher.services.prepared import fetch_prepared
from dispatcher.services.transitions import job_transition, jobs_transition_bulk
from dispatcher.states import JOB_ACTIVE, JobStatus

log = logging.getLogger(__name__)

# No dispatch limit: a column compared against this always fits.
UNLIMITED = 2**31 - 1

# In-flight states in the order a pilot moves through them; an update never lowers the rank.
_RANK = {JobStatus.SENT: 0, JobStatus.STARTING: 1, JobStatus.RUNNING: 2, JobStatus.HOLDING: 3}
PILOT_FINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED})
PILOT_STATES = frozenset(_RANK) | PILOT_FINAL

# Commands sent back to a pilot.
KILL = "tobekilled"

_JOB_COLUMNS = (
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


@dataclass(frozen=True)
class DispatchRequest:
    """What a pilot asks for; limits default to "no limit"."""

    queue: str
    n_jobs: int = 1
    memory_mb: int = UNLIMITED
    disk_mb: int = UNLIMITED
    cores: int = UNLIMITED
    walltime_s: int = UNLIMITED
    prodsourcelabel: str = ""  # empty: any label
    resource_type: str = ""  # empty: any; else jobs of that type or without one
    node: str = ""
    pilot_id: str = ""
    batch_id: str = ""
    worker_id: int | None = None


@dataclass(frozen=True)
class PilotUpdate:
    """One updateJob / update_job, already typed by the protocol layer."""

    pandaid: int
    status: str
    attemptnr: int
    lease: str = ""
    node: str = ""
    pilot_id: str = ""
    batch_id: str = ""
    starttime: dt.datetime | None = None
    endtime: dt.datetime | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # cpu_time_s, max_rss_kb, max_pss_kb, actual_cores
    errors: dict[str, Any] = field(default_factory=dict)  # piloterrorcode, transexitcode, …


@dataclass(frozen=True)
class UpdateReply:
    """`command` is None or "tobekilled"; `status` is the job's status after the call."""

    command: str | None
    status: str
    note: str = ""


class ForeignJob(Exception):
    """The job belongs to a queue the pilot's token is not bound to."""

    def __init__(self, pandaid: int, queue: str) -> None:
        super().__init__(f"job {pandaid} belongs to queue {queue!r}, which this pilot token is not bound to")


def _decode_job_row(row: Sequence[Any]) -> dict[str, Any]:
    job = dict(zip(_JOB_COLUMNS, row, strict=True))
    env = job["environment"]
    if isinstance(env, str):
        job["environment"] = json.loads(env) if env else {}
    return job


# ---------------------------------------------------------------------------------------------
# Dispatch


def jobs_dispatch(*, request: DispatchRequest) -> list[dict[str, Any]]:
    """Claim up to `request.n_jobs` matching activated jobs of the queue for one pilot.

    Returns the claimed jobs (the columns of `_JOB_COLUMNS`, with their fresh lease), highest
    currentpriority first, then oldest pandaid. Never returns a job twice; returns nothing only if
    no matching activated job is unlocked.
    """
    if request.n_jobs < 1:
        return []
    if connection.vendor == "postgresql":
        return _jobs_dispatch_postgresql(request)
    return _jobs_dispatch_generic(request)


_DISPATCH_SQL = """
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
""".format(columns=", ".join(f"j.{c}" for c in _JOB_COLUMNS))  # noqa: S608  (our column names, no values)


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


def _jobs_dispatch_postgresql(request: DispatchRequest) -> list[dict[str, Any]]:
    return [_decode_job_row(row) for row in fetch_prepared(_DISPATCH_SQL, _dispatch_params(request))]


@transaction.atomic
def _jobs_dispatch_generic(request: DispatchRequest) -> list[dict[str, Any]]:
    """SQLite: the IMMEDIATE transaction holds the write lock, so select-then-transition is safe."""
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
        ("queue_id" if c == "computingsite" else "task_id" if c == "jeditaskid" else c) for c in _JOB_COLUMNS
    ]
    rows = Job.objects.filter(pandaid__in=ids).order_by("-currentpriority", "pandaid").values_list(*columns)
    return [_decode_job_row(row) for row in rows]


# ---------------------------------------------------------------------------------------------
# Updates


def job_pilot_update(*, update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply:
    """Apply one pilot update. Heartbeats (sent/starting/running/holding) are one fenced
    statement; a final state ends the attempt through `job_attempt_end`. Raises ForeignJob when the
    job is in a queue outside `queues` (None: any queue) — nothing is written then.
    """
    if update.status in PILOT_FINAL:
        return _job_final_update(update, queues)
    if connection.vendor == "postgresql":
        reply = _job_heartbeat_postgresql(update, queues)
    else:
        reply = _job_heartbeat_generic(update, queues)
    return reply if reply is not None else _diagnose(update, queues)


_HEARTBEAT_SQL = """
WITH cur AS (
    SELECT pandaid, jobstatus AS prev FROM dispatcher_job
    WHERE pandaid = %(pandaid)s AND jobstatus IN ('sent', 'starting', 'running', 'holding')
      AND attemptnr = %(attemptnr)s
      AND (%(lease)s = '' OR lease = %(lease)s)
      AND (%(any_queue)s OR computingsite = ANY(%(queues)s))
    FOR UPDATE
), upd AS (
    UPDATE dispatcher_job AS j SET
        jobstatus = CASE WHEN %(rank)s > (CASE cur.prev WHEN 'sent' THEN 0 WHEN 'starting' THEN 1
                                            WHEN 'running' THEN 2 ELSE 3 END)
                         THEN %(status)s ELSE cur.prev END,
        statechangetime = CASE WHEN cur.prev <> %(status)s AND %(rank)s > (CASE cur.prev WHEN 'sent' THEN 0
                                    WHEN 'starting' THEN 1 WHEN 'running' THEN 2 ELSE 3 END)
                               THEN %(now)s ELSE j.statechangetime END,
        modificationtime = %(now)s,
        starttime = COALESCE(j.starttime, CASE WHEN %(rank)s >= 2 THEN COALESCE(%(starttime)s, %(now)s) END),
        modificationhost = COALESCE(NULLIF(%(node)s, ''), j.modificationhost),
        pilot_id = COALESCE(NULLIF(%(pilot_id)s, ''), j.pilot_id),
        batch_id = COALESCE(NULLIF(%(batch_id)s, ''), j.batch_id),
        cpu_time_s = COALESCE(%(cpu_time_s)s, j.cpu_time_s),
        max_rss_kb = COALESCE(%(max_rss_kb)s, j.max_rss_kb),
        max_pss_kb = COALESCE(%(max_pss_kb)s, j.max_pss_kb),
        actual_cores = COALESCE(%(actual_cores)s, j.actual_cores)
    FROM cur WHERE j.pandaid = cur.pandaid
    RETURNING j.pandaid, cur.prev, j.jobstatus, j.attemptnr, j.jeditaskid
), logged AS (
    INSERT INTO dispatcher_jobstatuslog (job_id, attemptnr, jobstatus, previous, time, cause)
    SELECT pandaid, attemptnr, jobstatus, prev, %(now)s, %(cause)s FROM upd WHERE jobstatus <> prev
), counted AS (
    INSERT INTO dispatcher_taskcountdelta (jeditaskid, jobstatus, delta)
    SELECT u.jeditaskid, v.status, v.delta
    FROM upd AS u CROSS JOIN LATERAL (VALUES (u.prev, -1), (u.jobstatus, 1)) AS v(status, delta)
    WHERE u.jobstatus <> u.prev
)
SELECT jobstatus FROM upd
"""


_HEARTBEAT_BULK_SQL = """
WITH u AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(leases)s::text[], %(statuses)s::text[], %(ranks)s::int[],
        %(starts)s::timestamptz[], %(nodes)s::text[], %(pilots)s::text[], %(batches)s::text[],
        %(cpu)s::float8[], %(rss)s::bigint[], %(pss)s::bigint[], %(cores)s::float8[]
    ) AS u(id, attempt, lease, status, rank, start, node, pilot, batch, cpu, rss, pss, cores)
), cur AS (
    SELECT j.pandaid, j.jobstatus AS prev,
           CASE j.jobstatus WHEN 'sent' THEN 0 WHEN 'starting' THEN 1 WHEN 'running' THEN 2 ELSE 3 END AS prev_rank,
           u.*
    FROM dispatcher_job AS j JOIN u ON j.pandaid = u.id
    WHERE j.pandaid = ANY(%(ids)s::bigint[]) AND j.jobstatus = ANY(%(in_flight)s::text[])
      AND j.attemptnr = u.attempt
      AND (u.lease = '' OR j.lease = u.lease)
      AND (%(any_queue)s OR j.computingsite = ANY(%(queues)s))
    ORDER BY j.pandaid
    FOR UPDATE OF j
), upd AS (
    UPDATE dispatcher_job AS j SET
        jobstatus = CASE WHEN cur.rank > cur.prev_rank THEN cur.status ELSE cur.prev END,
        statechangetime = CASE WHEN cur.rank > cur.prev_rank THEN %(now)s ELSE j.statechangetime END,
        modificationtime = %(now)s,
        starttime = COALESCE(j.starttime, CASE WHEN cur.rank >= 2 THEN COALESCE(cur.start, %(now)s) END),
        modificationhost = COALESCE(NULLIF(cur.node, ''), j.modificationhost),
        pilot_id = COALESCE(NULLIF(cur.pilot, ''), j.pilot_id),
        batch_id = COALESCE(NULLIF(cur.batch, ''), j.batch_id),
        cpu_time_s = COALESCE(cur.cpu, j.cpu_time_s),
        max_rss_kb = COALESCE(cur.rss, j.max_rss_kb),
        max_pss_kb = COALESCE(cur.pss, j.max_pss_kb),
        actual_cores = COALESCE(cur.cores, j.actual_cores)
    FROM cur WHERE j.pandaid = cur.pandaid
    RETURNING j.pandaid, cur.prev, j.jobstatus, j.attemptnr, j.jeditaskid
), logged AS (
    INSERT INTO dispatcher_jobstatuslog (job_id, attemptnr, jobstatus, previous, time, cause)
    SELECT pandaid, attemptnr, jobstatus, prev, %(now)s, 'pilot reported ' || jobstatus FROM upd WHERE jobstatus <> prev
), counted AS (
    INSERT INTO dispatcher_taskcountdelta (jeditaskid, jobstatus, delta)
    SELECT c.jeditaskid, c.status, sum(c.delta) FROM (
        SELECT u.jeditaskid, v.status, v.delta
        FROM upd AS u CROSS JOIN LATERAL (VALUES (u.prev, -1), (u.jobstatus, 1)) AS v(status, delta)
        WHERE u.jobstatus <> u.prev
    ) AS c GROUP BY c.jeditaskid, c.status
)
SELECT pandaid, jobstatus FROM upd
"""


def jobs_pilot_update_bulk(
    *, updates: Sequence[PilotUpdate], queues: frozenset[str] | None
) -> list[UpdateReply | ForeignJob]:
    """Many pilot updates (Harvester's update_jobs_bulk); one reply per update, in order.

    On PostgreSQL every heartbeat of the batch is applied by ONE statement (the set-based form of
    the single heartbeat, same fence and guarantees), and every `finished` by one more
    (`jobs_finish_postgresql`); failed attempts go one by one through `job_attempt_end`.
    A ForeignJob in the result marks an update refused for its queue.
    """
    replies: dict[int, UpdateReply | ForeignJob] = {}
    finished_here: dict[int, int] = {}
    heartbeats = [u for u in updates if u.status not in PILOT_FINAL]
    if heartbeats and connection.vendor == "postgresql":
        latest = {u.pandaid: u for u in heartbeats}  # a job twice in one batch: its last update counts
        batch = list(latest.values())
        rows = fetch_prepared(
            _HEARTBEAT_BULK_SQL,
            {
                "ids": [u.pandaid for u in batch],
                "attempts": [u.attemptnr for u in batch],
                "leases": [u.lease for u in batch],
                "statuses": [u.status for u in batch],
                "ranks": [_RANK[JobStatus(u.status)] for u in batch],
                "starts": [u.starttime for u in batch],
                "nodes": [u.node[:128] for u in batch],
                "pilots": [u.pilot_id[:200] for u in batch],
                "batches": [u.batch_id[:80] for u in batch],
                "cpu": [u.metrics.get("cpu_time_s") for u in batch],
                "rss": [u.metrics.get("max_rss_kb") for u in batch],
                "pss": [u.metrics.get("max_pss_kb") for u in batch],
                "cores": [u.metrics.get("actual_cores") for u in batch],
                "any_queue": queues is None,
                "queues": sorted(queues or ()),
                "now": timezone.now(),
                "in_flight": IN_FLIGHT,
            },
        )
        for pandaid, status in rows:
            replies[pandaid] = UpdateReply(command=None, status=status)
    finished = [u for u in updates if u.status == JobStatus.FINISHED]
    if finished and connection.vendor == "postgresql":
        finished_here = jobs_finish_postgresql(finished, queues)
    out: list[UpdateReply | ForeignJob] = []
    for update in updates:
        if update.status not in PILOT_FINAL and update.pandaid in replies:
            out.append(replies[update.pandaid])
            continue
        if update.status == JobStatus.FINISHED and connection.vendor == "postgresql":
            if finished_here.pop(update.pandaid, None) == update.attemptnr:  # once: the next is a duplicate
                out.append(UpdateReply(command=None, status=JobStatus.FINISHED))
                continue
            try:  # not fenced in: a duplicate, a stale attempt or another queue's job
                out.append(_diagnose(update, queues))
            except ForeignJob as exc:
                out.append(exc)
            continue
        try:
            out.append(job_pilot_update(update=update, queues=queues))
        except ForeignJob as exc:
            out.append(exc)
    return out


def _heartbeat_params(update: PilotUpdate, queues: frozenset[str] | None) -> dict[str, Any]:
    m = update.metrics
    return {
        "pandaid": update.pandaid,
        "status": update.status,
        "rank": _RANK[JobStatus(update.status)],
        "attemptnr": update.attemptnr,
        "lease": update.lease,
        "any_queue": queues is None,
        "queues": sorted(queues or ()),
        "now": timezone.now(),
        "starttime": update.starttime,
        "node": update.node[:128],
        "pilot_id": update.pilot_id[:200],
        "batch_id": update.batch_id[:80],
        "cpu_time_s": m.get("cpu_time_s"),
        "max_rss_kb": m.get("max_rss_kb"),
        "max_pss_kb": m.get("max_pss_kb"),
        "actual_cores": m.get("actual_cores"),
        "cause": f"pilot reported {update.status}",
    }


def _job_heartbeat_postgresql(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply | None:
    rows = fetch_prepared(_HEARTBEAT_SQL, _heartbeat_params(update, queues))
    return UpdateReply(command=None, status=rows[0][0]) if rows else None


def _fence_matches(row: Mapping[str, Any], update: PilotUpdate, queues: frozenset[str] | None) -> bool:
    return (
        row["jobstatus"] in JOB_ACTIVE
        and row["attemptnr"] == update.attemptnr
        and (not update.lease or row["lease"] == update.lease)
        and (queues is None or str(row["queue_id"]) in queues)
    )


@transaction.atomic
def _job_heartbeat_generic(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply | None:
    p = _heartbeat_params(update, queues)
    row = (
        Job.objects.select_for_update()
        .filter(pandaid=update.pandaid)
        .values("jobstatus", "attemptnr", "lease", "queue_id", "starttime")
        .first()
    )
    if row is None or not _fence_matches(row, update, queues):
        return None
    fields: dict[str, Any] = {"heartbeat_at": p["now"]}
    for name in ("node", "pilot_id", "batch_id"):
        if p[name]:
            fields[name] = p[name]
    fields.update({k: v for k, v in update.metrics.items() if v is not None})
    if row["starttime"] is None and p["rank"] >= 2:
        fields["starttime"] = update.starttime or p["now"]
    current = row["jobstatus"]
    if p["rank"] > _RANK[JobStatus(current)]:
        job_transition(
            pandaid=update.pandaid, to=update.status, cause=p["cause"], expect=current, fields=fields
        )
        return UpdateReply(command=None, status=update.status)
    Job.objects.filter(pandaid=update.pandaid).update(**fields)
    return UpdateReply(command=None, status=current)


def _job_final_update(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply:
    if update.status == JobStatus.FINISHED and connection.vendor == "postgresql":
        if jobs_finish_postgresql([update], queues):
            return UpdateReply(command=None, status=JobStatus.FINISHED)
        return _diagnose(update, queues)
    return _job_final_update_generic(update, queues)


def _job_final_update_generic(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply:
    """Fence, then `job_attempt_end`: failed attempts, SQLite, and the oracle of the fast path."""
    with transaction.atomic():
        row = (
            Job.objects.select_for_update()
            .filter(pandaid=update.pandaid)
            .values(
                "jobstatus", "attemptnr", "lease", "queue_id", "starttime", "node", "pilot_id", "batch_id"
            )
            .first()
        )
        if row is None or not _fence_matches(row, update, queues):
            return _diagnose(update, queues)
        pending: dict[str, Any] = {}
        if row["starttime"] is None:
            pending["starttime"] = update.starttime or timezone.now()
        for name in ("node", "pilot_id", "batch_id"):
            value = getattr(update, name)[: Job._meta.get_field(name).max_length]  # type: ignore[union-attr]
            if value and value != row[name]:
                pending[name] = value
        if pending:
            Job.objects.filter(pandaid=update.pandaid).update(**pending)
        outcome = job_attempt_end(
            pandaid=update.pandaid,
            attemptnr=row["attemptnr"],
            status=update.status,
            cause=f"pilot reported {update.status}",
            errors=update.errors,
            metrics={k: v for k, v in update.metrics.items() if v is not None},
            endtime=update.endtime,
        )
    if outcome is None:  # cannot happen under the row lock, but never report a write that did not occur
        return _diagnose(update, queues)
    return UpdateReply(command=None, status=outcome.status)


def _diagnose(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply:
    """Why the fence did not match: 403 for another queue's job, duplicates are fine, anything
    else (unknown job, stale attempt or lease, killed job) is told to die."""
    row = (
        Job.objects.filter(pandaid=update.pandaid)
        .values("jobstatus", "attemptnr", "lease", "queue_id")
        .first()
    )
    if row is None:
        return UpdateReply(command=KILL, status="", note=f"unknown job {update.pandaid}")
    queue = str(row["queue_id"] or "")
    if queues is not None and queue not in queues:
        raise ForeignJob(update.pandaid, queue)
    if row["attemptnr"] != update.attemptnr or (update.lease and row["lease"] != update.lease):
        return UpdateReply(
            command=KILL,
            status=row["jobstatus"],
            note=f"stale attempt {update.attemptnr} (current {row['attemptnr']})",
        )
    if row["jobstatus"] in (JobStatus.FINISHED, JobStatus.FAILED):
        return UpdateReply(command=None, status=row["jobstatus"], note="duplicate update of an ended attempt")
    return UpdateReply(command=KILL, status=row["jobstatus"], note=f"job is {row['jobstatus']}")
