"""The `finished` final update on PostgreSQL: every write of `job_attempt_end` for a successful
attempt, for one job or a whole `update_jobs_bulk`, in ONE prepared statement.

What it writes is exactly what the generic path (`_job_final_update` → `job_attempt_end`) writes
for `finished` — tests/dispatcher/test_finish_fast_path.py runs both on twin jobs and compares every
row — but in one round trip instead of sixteen:

1. `cur`: lock the fenced rows (pandaid + attemptnr + lease + queue, in flight) in pandaid order;
2. `upd`: the job becomes `finished` with its end time, metrics and errors (start time, node,
   pilot and batch ids filled in when the pilot sends them);
3. `attempt`, `logged`, `counted`: the JobAttempt row, the JobStatusLog row and the counter deltas;
4. `children`, `released`: the children's `pending_parents` drop by the number of their parents
   that finished here; children are locked in pandaid order first (two parents finishing at once
   lock their shared children in the same order and cannot deadlock).

A failed attempt needs the retry decision (rules, the task's caps) and pruning; it stays on
`job_attempt_end`, as does SQLite.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from django.utils import timezone

from dispatcher.retry import FAMILY_COLUMNS
from dispatcher.services.prepared import fetch_prepared

log = logging.getLogger(__name__)

_DIAG_MAX = 500
# A parameter, not literals: the generic plan must find the rows by primary key, and with literal
# states the planner may prefer scanning the partial index of in-flight jobs (prepared.py).
IN_FLIGHT = ["sent", "starting", "running", "holding"]
# (column, SQL array type) of every error family, in a fixed order.
_ERROR_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (column, "int" if column.endswith("code") else "text")
    for code, diag in FAMILY_COLUMNS.values()
    for column in (code, diag)
    if column
)
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cpu_time_s", "float8"),
    ("max_rss_kb", "bigint"),
    ("max_pss_kb", "bigint"),
    ("actual_cores", "float8"),
)


class FinishedUpdate(Protocol):
    """What the statement reads of a pilot update (dispatch.PilotUpdate)."""

    @property
    def pandaid(self) -> int: ...
    @property
    def attemptnr(self) -> int: ...
    @property
    def lease(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def pilot_id(self) -> str: ...
    @property
    def batch_id(self) -> str: ...
    @property
    def starttime(self) -> dt.datetime | None: ...
    @property
    def endtime(self) -> dt.datetime | None: ...
    @property
    def metrics(self) -> dict[str, Any]: ...
    @property
    def errors(self) -> dict[str, Any]: ...


def _build_sql() -> str:
    extra = [*METRIC_COLUMNS, *_ERROR_COLUMNS]
    arrays = ", ".join(f"%({c})s::{t}[]" for c, t in extra)
    names = ", ".join(f"in_{c}" for c, _ in extra)
    set_metrics = ",\n        ".join(f"{c} = COALESCE(cur.in_{c}, j.{c})" for c, _ in METRIC_COLUMNS)
    set_errors = ",\n        ".join(f"{c} = COALESCE(cur.in_{c}, j.{c})" for c, _ in _ERROR_COLUMNS)
    returning_errors = ", ".join(f"cur.in_{c}" for c, _ in _ERROR_COLUMNS)
    attempt_errors = ", ".join(c for c, _ in _ERROR_COLUMNS)
    empty = {"int": "0", "text": "''"}
    attempt_error_values = ", ".join(f"COALESCE(in_{c}, {empty[t]})" for c, t in _ERROR_COLUMNS)
    return f"""
WITH u AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(leases)s::text[], %(starts)s::timestamptz[],
        %(ends)s::timestamptz[], %(nodes)s::text[], %(pilots)s::text[], %(batches)s::text[],
        {arrays}
    ) AS u(id, attempt, lease, start, stop, node, pilot, batch, {names})
), cur AS (
    SELECT j.pandaid, j.jobstatus AS prev, u.*
    FROM dispatcher_job AS j JOIN u ON j.pandaid = u.id
    WHERE j.pandaid = ANY(%(ids)s::bigint[]) AND j.jobstatus = ANY(%(in_flight)s::text[])
      AND j.attemptnr = u.attempt
      AND (u.lease = '' OR j.lease = u.lease)
      AND (%(any_queue)s OR j.computingsite = ANY(%(queues)s))
    ORDER BY j.pandaid
    FOR UPDATE OF j
), upd AS (
    UPDATE dispatcher_job AS j SET
        jobstatus = 'finished',
        statechangetime = %(now)s,
        endtime = COALESCE(cur.stop, %(now)s),
        starttime = COALESCE(j.starttime, cur.start, %(now)s),
        modificationhost = COALESCE(NULLIF(cur.node, ''), j.modificationhost),
        pilot_id = COALESCE(NULLIF(cur.pilot, ''), j.pilot_id),
        batch_id = COALESCE(NULLIF(cur.batch, ''), j.batch_id),
        {set_metrics},
        {set_errors}
    FROM cur WHERE j.pandaid = cur.pandaid
    RETURNING j.pandaid, j.attemptnr, j.jeditaskid, j.workflow_id, cur.prev, j.computingsite,
        j.modificationhost, j.pilot_id, j.worker_id, j.request_memory_mb, j.request_cores,
        j.cpu_time_s, j.max_rss_kb, j.max_pss_kb, j.dispatched_at, j.starttime, j.endtime,
        {returning_errors}
), attempt AS (
    INSERT INTO dispatcher_jobattempt (
        job_id, attemptnr, jobstatus, computingsite, node, pilot_id, worker_id, request_memory_mb,
        request_cores, cpu_time_s, max_rss_kb, max_pss_kb, walltime_s, {attempt_errors},
        retry_action, retry_reason, dispatched_at, starttime, endtime)
    SELECT pandaid, attemptnr, 'finished', COALESCE(computingsite, ''), modificationhost, pilot_id,
        worker_id, request_memory_mb, request_cores, cpu_time_s, max_rss_kb, max_pss_kb,
        EXTRACT(EPOCH FROM (endtime - starttime))::float8, {attempt_error_values},
        '', '', dispatched_at, starttime, endtime
    FROM upd
), logged AS (
    INSERT INTO dispatcher_jobstatuslog (job_id, attemptnr, jobstatus, previous, time, cause)
    SELECT pandaid, attemptnr, 'finished', prev, %(now)s, 'pilot reported finished' FROM upd
), counted AS (
    INSERT INTO dispatcher_taskcountdelta (jeditaskid, jobstatus, delta)
    SELECT c.jeditaskid, c.status, sum(c.delta) FROM (
        SELECT u.jeditaskid, v.status, v.delta
        FROM upd AS u CROSS JOIN LATERAL (VALUES (u.prev, -1), ('finished', 1)) AS v(status, delta)
    ) AS c GROUP BY c.jeditaskid, c.status
), edges AS (
    SELECT d.child_id, count(*) AS n
    FROM dispatcher_jobdependency AS d JOIN upd ON d.parent_id = upd.pandaid
    GROUP BY d.child_id
), children AS (
    SELECT c.pandaid, edges.n FROM dispatcher_job AS c JOIN edges ON c.pandaid = edges.child_id
    ORDER BY c.pandaid
    FOR UPDATE OF c
), released AS (
    UPDATE dispatcher_job AS c SET pending_parents = GREATEST(c.pending_parents - children.n, 0)
    FROM children WHERE c.pandaid = children.pandaid AND c.pending_parents > 0
    RETURNING c.pending_parents
)
SELECT pandaid, attemptnr, jeditaskid, workflow_id,
       (SELECT count(*) FROM released WHERE pending_parents = 0)
FROM upd
"""  # noqa: S608  (constant column names and placeholders only)


_FINISH_SQL = _build_sql()


def _params(updates: Sequence[FinishedUpdate], queues: frozenset[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ids": [u.pandaid for u in updates],
        "attempts": [u.attemptnr for u in updates],
        "leases": [u.lease for u in updates],
        "starts": [u.starttime for u in updates],
        "ends": [u.endtime for u in updates],
        "nodes": [u.node[:128] for u in updates],
        "pilots": [u.pilot_id[:200] for u in updates],
        "batches": [u.batch_id[:80] for u in updates],
        "any_queue": queues is None,
        "queues": sorted(queues or ()),
        "now": timezone.now(),
        "in_flight": IN_FLIGHT,
    }
    for column, _ in METRIC_COLUMNS:
        params[column] = [u.metrics.get(column) for u in updates]
    for column, kind in _ERROR_COLUMNS:
        values: list[Any] = [u.errors.get(column) for u in updates]
        if kind == "text":
            values = [None if v is None else str(v)[:_DIAG_MAX] for v in values]
        params[column] = values
    return params


def jobs_finish_postgresql(
    updates: Sequence[FinishedUpdate], queues: frozenset[str] | None
) -> dict[int, int]:
    """End the attempts of `updates` as finished where the fence matches; returns {pandaid: attemptnr}
    of the jobs finished here. The others (duplicate, stale, killed, another queue's job) are left
    untouched for the caller to diagnose. A job twice in `updates`: its first update counts and the
    next ones are duplicates, as when they arrive one by one.
    """
    first: dict[int, FinishedUpdate] = {}
    for u in updates:
        first.setdefault(u.pandaid, u)
    batch = list(first.values())
    if not batch:
        return {}
    rows = fetch_prepared(_FINISH_SQL, _params(batch, queues))
    for pandaid, attemptnr, task_id, workflow_id, released in rows:
        log.info(
            "job %s attempt %s ended finished -> finished",
            pandaid,
            attemptnr,
            extra={
                "event": "job.attempt_end",
                "pandaid": pandaid,
                "jeditaskid": task_id,
                "workflow_id": workflow_id,
                "attemptnr": attemptnr,
                "result": "finished",
                "job_status": "finished",
                "retry": "",
                "released": int(released),  # of the whole batch
                "pruned": 0,
            },
        )
    return {int(pandaid): int(attemptnr) for pandaid, attemptnr, *_ in rows}
