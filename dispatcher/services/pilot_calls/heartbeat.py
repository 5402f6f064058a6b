"""The heartbeat: a pilot's update in flight (sent, starting, running, holding), for one job or
a whole `update_jobs_bulk`.

For every update whose fence matches (`messages.fence_matches`): the job moves up to the reported
state, never back (sent < starting < running < holding); the heartbeat time is now; node, pilot
and batch ids and metrics are kept when sent; the start time is set once the job runs. A state
change writes its JobStatusLog row and counter deltas (docs/decisions/0002), like `job_transition`.

* PostgreSQL: ONE prepared statement for the whole batch (docs/decisions/0004), the fenced rows
  locked in pandaid order; a heartbeat that changes no state touches no index (a HOT update).
  Outside a transaction, the heartbeats of a process's concurrent requests share that statement
  (`coalesce.py`, docs/decisions/0014); each caller is answered once it committed. A statement
  that changed no job's state sets `synchronous_commit` off for its transaction (the setting
  AILURO_PILOT_LAZY_HEARTBEAT_FLUSH): its commit does not wait for the WAL flush, which the WAL
  writer makes within ~0.6 s, or any later commit that waits makes sooner (docs/decisions/0020).
* Otherwise (SQLite, the embedded run): per update, the fence, then `job_transition` or a plain
  update, all in one transaction.

A job twice in one batch: its last update counts, on both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from dispatcher.models import Job
from dispatcher.services.pilot_calls.coalesce import COALESCER
from dispatcher.services.pilot_calls.messages import (
    IN_FLIGHT,
    METRIC_NAMES,
    RANK,
    PilotUpdate,
    UpdateReply,
    fence_matches,
)
from dispatcher.services.prepared import fetch_prepared
from dispatcher.services.transitions import job_transition
from dispatcher.states import JobStatus


def jobs_heartbeat(updates: Sequence[PilotUpdate], queues: frozenset[str] | None) -> list[UpdateReply | None]:
    """Apply the heartbeats whose fence matches; one entry per update, in order: the reply (the
    job's status after the call), or None where nothing was written (unknown job, stale attempt or
    lease, a job no longer in flight, another queue's job) for the caller to diagnose."""
    latest = {u.pandaid: u for u in updates}  # a job twice in one batch: its last update counts
    if not latest:
        return []
    for u in latest.values():
        if u.status not in RANK:
            raise ValueError(f"a heartbeat reports an in-flight state, not {u.status!r}")
    if (
        connection.vendor == "postgresql"
        and settings.AILURO_PILOT["COALESCE_HEARTBEATS"]
        and not connection.in_atomic_block
    ):
        # Written with the concurrent requests' heartbeats, answered once committed (coalesce.py).
        status = COALESCER.write(list(latest.values()), queues, _jobs_heartbeat_postgresql)
    elif connection.vendor == "postgresql":
        status = _jobs_heartbeat_postgresql(list(latest.values()), queues)
    else:
        status = _jobs_heartbeat_generic(list(latest.values()), queues)
    return [
        UpdateReply(command=None, status=status[u.pandaid]) if u.pandaid in status else None for u in updates
    ]


# What each update brings to the statement: (name in SQL and in the parameters, SQL type), in the
# order of `_input_row`.
_INPUT = (
    ("id", "bigint"),
    ("attempt", "int"),
    ("lease", "text"),
    ("status", "text"),
    ("rank", "int"),
    ("start", "timestamptz"),
    ("node", "text"),
    ("pilot", "text"),
    ("batch", "text"),
    ("cpu", "float8"),
    ("rss", "bigint"),
    ("pss", "bigint"),
    ("cores", "float8"),
)


def _input_row(u: PilotUpdate) -> tuple[Any, ...]:
    m = u.metrics
    return (
        u.pandaid,
        u.attemptnr,
        u.lease,
        u.status,
        RANK[JobStatus(u.status)],
        u.starttime,
        u.node[:128],
        u.pilot_id[:200],
        u.batch_id[:80],
        m.get("cpu_time_s"),
        m.get("max_rss_kb"),
        m.get("max_pss_kb"),
        m.get("actual_cores"),
    )


# The heartbeat, written once. `u` holds the updates: one row of scalar parameters for a single
# update, the rows of unnested array parameters for a batch (arrays cost a single update ~0.1 ms
# more CPU, client and server together).
_HEARTBEAT_SQL = """
WITH u AS ({updates}), cur AS (
    SELECT j.pandaid, j.jobstatus AS prev,
           CASE j.jobstatus WHEN 'sent' THEN 0 WHEN 'starting' THEN 1 WHEN 'running' THEN 2 ELSE 3 END AS prev_rank,
           u.*
    FROM dispatcher_job AS j JOIN u ON j.pandaid = u.id
    LEFT JOIN dispatcher_queue AS q ON q.name = j.computingsite
    WHERE {by_key} AND j.jobstatus = ANY(%(in_flight)s::text[])
      AND j.attemptnr = u.attempt
      AND CASE u.lease WHEN '' THEN q.require_lease IS NOT TRUE ELSE j.lease = u.lease END
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
), flush AS (
    -- One row, read after every row of upd: no state changed, so the commit need not wait.
    SELECT set_config('synchronous_commit', 'off', true)
    FROM upd HAVING %(lazy_flush)s AND NOT coalesce(bool_or(jobstatus <> prev), false)
)
SELECT pandaid, jobstatus FROM upd LEFT JOIN flush ON true
"""
_NAMES = tuple(name for name, _ in _INPUT)
# Our column names and placeholders only, no values (hence the noqa: S608).
HEARTBEAT_ONE_SQL = _HEARTBEAT_SQL.format(
    updates="SELECT " + ", ".join(f"%({name})s::{kind} AS {name}" for name, kind in _INPUT),  # noqa: S608
    by_key="j.pandaid = %(id)s",
)
HEARTBEAT_MANY_SQL = _HEARTBEAT_SQL.format(
    updates=f"SELECT * FROM unnest({', '.join(f'%({name})s::{kind}[]' for name, kind in _INPUT)}) AS u({', '.join(_NAMES)})",  # noqa: S608
    by_key="j.pandaid = ANY(%(id)s::bigint[])",
)


def heartbeat_statement(
    updates: Sequence[PilotUpdate], queues: frozenset[str] | None, *, now: dt.datetime
) -> tuple[str, dict[str, Any]]:
    """The heartbeat statement for `updates` (each job once) and its parameters."""
    params: dict[str, Any] = {
        "any_queue": queues is None,
        "queues": sorted(queues or ()),
        "now": now,
        "in_flight": IN_FLIGHT,
        "lazy_flush": bool(settings.AILURO_PILOT["LAZY_HEARTBEAT_FLUSH"]),
    }
    if len(updates) == 1:
        params.update(zip(_NAMES, _input_row(updates[0]), strict=True))
        return HEARTBEAT_ONE_SQL, params
    columns = zip(*map(_input_row, updates), strict=True)  # one array parameter per column
    params.update(zip(_NAMES, map(list, columns), strict=True))
    return HEARTBEAT_MANY_SQL, params


def _jobs_heartbeat_postgresql(
    updates: Sequence[PilotUpdate], queues: frozenset[str] | None
) -> dict[int, str]:
    rows = fetch_prepared(*heartbeat_statement(updates, queues, now=timezone.now()))
    return {int(pandaid): str(status) for pandaid, status in rows}


@transaction.atomic
def _jobs_heartbeat_generic(updates: Sequence[PilotUpdate], queues: frozenset[str] | None) -> dict[int, str]:
    now = timezone.now()
    status: dict[int, str] = {}
    for update in sorted(updates, key=lambda u: u.pandaid):  # rows locked in pandaid order, as above
        row = (
            Job.objects.select_for_update(of=("self",))
            .filter(pandaid=update.pandaid)
            .values("jobstatus", "attemptnr", "lease", "queue_id", "queue__require_lease", "starttime")
            .first()
        )
        if row is None or not fence_matches(row, update, queues):
            continue
        rank = RANK[JobStatus(update.status)]
        fields: dict[str, Any] = {"heartbeat_at": now}
        for name, value in (("node", update.node[:128]), ("pilot_id", update.pilot_id[:200]),
                            ("batch_id", update.batch_id[:80])):  # fmt: skip
            if value:
                fields[name] = value
        fields.update({k: update.metrics[k] for k in METRIC_NAMES if update.metrics.get(k) is not None})
        if row["starttime"] is None and rank >= 2:
            fields["starttime"] = update.starttime or now
        current = row["jobstatus"]
        if rank > RANK[JobStatus(current)]:
            fields["statechangetime"] = now
            job_transition(
                pandaid=update.pandaid,
                to=update.status,
                cause=f"pilot reported {update.status}",
                expect=current,
                fields=fields,
            )
            status[update.pandaid] = update.status
        else:
            Job.objects.filter(pandaid=update.pandaid).update(**fields)
            status[update.pandaid] = current
    return status
