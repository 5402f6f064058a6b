"""The final update: a pilot reports its attempt `finished` or `failed`, for one job or a whole
`update_jobs_bulk`.

For every update whose fence matches (`messages.fence_matches`), the attempt ends as
`job_attempt_end` ends it: the JobAttempt row, the job's new state, its status log row and counter
deltas, and the DAG (children released, or descendants pruned after a final failure).

* PostgreSQL, `finished`: every write of `job_attempt_end` for a successful attempt, for the whole
  batch, in ONE prepared statement (docs/decisions/0004) instead of sixteen round trips:

  1. `cur`: lock the fenced rows (pandaid + attemptnr + lease + queue, in flight; the lease as
     `messages.lease_matches` wants it, read from the queue's `require_lease` in the same
     statement) in pandaid order;
  2. `upd`: the job becomes `finished` with its end time, metrics and errors (start time, node,
     pilot and batch ids filled in when the pilot sends them);
  3. `attempt`, `logged`, `counted`: the JobAttempt row, the JobStatusLog row and the counter deltas;
  4. `children`, `released`: the children's `pending_parents` drop by the number of their parents
     that finished here; children are locked in pandaid order first (two parents finishing at once
     lock their shared children in the same order and cannot deadlock);
  5. each row says whether its workflow has final jobs; only for those, `final_jobs_release`
     runs after the statement; and whether it is a cluster job (one probe of the small partial
     index of members): its members finish after the statement (`cluster_attempt_settle`).

  tests/dispatcher/test_finish_fast_path.py runs it and `job_final_update_generic` on twin jobs and
  compares every row.
* `failed` (the retry decision needs the rules and the task's caps; pruning), and every final
  update elsewhere (SQLite, the embedded run): `job_final_update_generic`, the fence then
  `job_attempt_end`, one transaction per update.

A job twice in one batch: its first final update counts, the next ones are duplicates, as when
they arrive one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from dispatcher.models import Job
from dispatcher.retry import FAMILY_COLUMNS
from dispatcher.services.attempts import DIAG_MAX, job_attempt_end
from dispatcher.services.clusters import cluster_attempt_settle
from dispatcher.services.final_jobs import final_jobs_release
from dispatcher.services.pilot_calls.messages import (
    IN_FLIGHT,
    METRIC_NAMES,
    PILOT_FINAL,
    PilotUpdate,
    UpdateReply,
    fence_matches,
)
from dispatcher.services.prepared import fetch_prepared
from dispatcher.states import JobStatus

log = logging.getLogger(__name__)
# What a pilot can report (dispatcher.protocol.pilot): the job dispatcher's and the task buffer's
# families are the server's own, so the attempt row gets them empty.
PILOT_ERROR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("piloterrorcode", "int"),
    ("piloterrordiag", "text"),
    ("exeerrorcode", "int"),
    ("exeerrordiag", "text"),
    ("transexitcode", "int"),
    ("superrorcode", "int"),
    ("superrordiag", "text"),
    ("ddmerrorcode", "int"),
    ("ddmerrordiag", "text"),
)
_SERVER_ERROR_COLUMNS = sorted(
    column
    for code, diag in FAMILY_COLUMNS.values()
    for column in (code, diag)
    if column and column not in dict(PILOT_ERROR_COLUMNS)
)
# Per update, besides metrics and errors: (JSON key, SQL type).
_UPDATE_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "bigint"),
    ("attempt", "int"),
    ("lease", "text"),
    ("start", "timestamptz"),
    ("stop", "timestamptz"),
    ("node", "text"),
    ("pilot", "text"),
    ("batch", "text"),
)
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cpu_time_s", "float8"),
    ("max_rss_kb", "bigint"),
    ("max_pss_kb", "bigint"),
    ("actual_cores", "float8"),
)


def _build_sql() -> str:
    """The statement, compact: psycopg caches the parsing of statements up to 4 KiB only."""
    empty = {"int": "0", "text": "''", "float8": "NULL", "bigint": "NULL"}
    record = ",".join(f"{c} {t}" for c, t in (*_UPDATE_FIELDS, *METRIC_COLUMNS, *PILOT_ERROR_COLUMNS))
    set_metrics = ", ".join(f"{c} = COALESCE(cur.{c}, j.{c})" for c, _ in METRIC_COLUMNS)
    # A finished attempt's errors are what its pilot reported (an in-flight job carries none).
    set_errors = ", ".join(f"{c} = COALESCE(cur.{c}, {empty[t]})" for c, t in PILOT_ERROR_COLUMNS)
    errors = ", ".join(c for c, _ in PILOT_ERROR_COLUMNS)
    server_errors = ", ".join(_SERVER_ERROR_COLUMNS)
    server_empty = ", ".join("0" if c.endswith("code") else "''" for c in _SERVER_ERROR_COLUMNS)
    sql = f"""
WITH u AS (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS u({record})),
cur AS (
  SELECT j.pandaid, j.jobstatus AS prev, u.* FROM dispatcher_job AS j JOIN u ON j.pandaid = u.id
  LEFT JOIN dispatcher_queue AS q ON q.name = j.computingsite
  WHERE j.pandaid = ANY(%(ids)s::bigint[]) AND j.jobstatus = ANY(%(in_flight)s::text[])
    AND j.attemptnr = u.attempt AND CASE u.lease WHEN '' THEN q.require_lease IS NOT TRUE ELSE j.lease = u.lease END
    AND (%(any_queue)s OR j.computingsite = ANY(%(queues)s))
  ORDER BY j.pandaid FOR UPDATE OF j),
upd AS (
  UPDATE dispatcher_job AS j SET jobstatus = 'finished', statechangetime = %(now)s,
    endtime = COALESCE(cur.stop, %(now)s), starttime = COALESCE(j.starttime, cur.start, %(now)s),
    modificationhost = COALESCE(NULLIF(cur.node, ''), j.modificationhost),
    pilot_id = COALESCE(NULLIF(cur.pilot, ''), j.pilot_id),
    batch_id = COALESCE(NULLIF(cur.batch, ''), j.batch_id), {set_metrics}, {set_errors}
  FROM cur WHERE j.pandaid = cur.pandaid
  RETURNING j.*, cur.prev),
attempt AS (
  INSERT INTO dispatcher_jobattempt (job_id, jeditaskid, attemptnr, jobstatus, computingsite, node,
    pilot_id, worker_id, request_memory_mb, request_cores, cpu_time_s, max_rss_kb, max_pss_kb,
    walltime_s, {errors}, {server_errors}, retry_action, retry_reason, dispatched_at, starttime,
    endtime, lease)
  SELECT pandaid, jeditaskid, attemptnr, 'finished', COALESCE(computingsite, ''), modificationhost, pilot_id,
    worker_id, request_memory_mb, request_cores, cpu_time_s, max_rss_kb, max_pss_kb,
    EXTRACT(EPOCH FROM (endtime - starttime))::float8, {errors}, {server_empty}, '', '',
    dispatched_at, starttime, endtime, ''
  FROM upd),
logged AS (
  INSERT INTO dispatcher_jobstatuslog (job_id, attemptnr, jobstatus, previous, time, cause)
  SELECT pandaid, attemptnr, 'finished', prev, %(now)s, 'pilot reported finished' FROM upd),
counted AS (
  INSERT INTO dispatcher_taskcountdelta (jeditaskid, jobstatus, delta)
  SELECT upd.jeditaskid, v.status, sum(v.delta) FROM upd
  CROSS JOIN LATERAL (VALUES (upd.prev, -1), ('finished', 1)) AS v(status, delta)
  GROUP BY upd.jeditaskid, v.status),
edges AS (
  SELECT d.child_id, count(*) AS n FROM dispatcher_jobdependency AS d
  JOIN upd ON d.parent_id = upd.pandaid GROUP BY d.child_id),
children AS (
  SELECT c.pandaid, edges.n FROM dispatcher_job AS c JOIN edges ON c.pandaid = edges.child_id
  ORDER BY c.pandaid FOR UPDATE OF c),
released AS (
  UPDATE dispatcher_job AS c SET pending_parents = GREATEST(c.pending_parents - children.n, 0)
  FROM children WHERE c.pandaid = children.pandaid AND c.pending_parents > 0
  RETURNING c.pending_parents)
SELECT pandaid, attemptnr, jeditaskid, workflow_id,
  (SELECT count(*) FROM released WHERE pending_parents = 0),
  (SELECT final_jobs FROM dispatcher_workflow WHERE id = workflow_id),
  EXISTS(SELECT FROM dispatcher_job m WHERE m.cluster_id = upd.pandaid) FROM upd
"""  # noqa: S608  (constant column names and placeholders only)
    # One line: psycopg caches the parsing of statements up to 4 KiB only.
    return " ".join(sql.split())


FINISH_SQL = _build_sql()


_PILOT_ERROR_KINDS = dict(PILOT_ERROR_COLUMNS)


def _params(updates: Sequence[PilotUpdate], queues: frozenset[str] | None) -> dict[str, Any]:
    """The statement's parameters; one JSON record per update. Absent values are left out of the
    record (jsonb_to_recordset reads a missing key as NULL), which keeps the batch's JSON short."""
    rows = []
    for u in updates:
        row: dict[str, Any] = {
            "id": u.pandaid,
            "attempt": u.attemptnr,
            "lease": u.lease,
            "node": u.node[:128],
            "pilot": u.pilot_id[:200],
            "batch": u.batch_id[:80],
        }
        if u.starttime:
            row["start"] = u.starttime.isoformat()
        if u.endtime:
            row["stop"] = u.endtime.isoformat()
        for name, value in u.metrics.items():
            if value is not None and name in METRIC_NAMES:
                row[name] = value
        for column, value in u.errors.items():
            kind = _PILOT_ERROR_KINDS.get(column)
            if kind is None:
                raise ValueError(
                    f"a pilot does not report {', '.join(sorted(set(u.errors) - set(_PILOT_ERROR_KINDS)))}"
                )
            if value is not None:
                row[column] = str(value)[:DIAG_MAX] if kind == "text" else value
        rows.append(row)
    return {
        "rows": Jsonb(rows),
        "ids": [u.pandaid for u in updates],
        "any_queue": queues is None,
        "queues": sorted(queues or ()),
        "now": timezone.now(),
        "in_flight": IN_FLIGHT,
    }


def _jobs_finish_postgresql(updates: Sequence[PilotUpdate], queues: frozenset[str] | None) -> dict[int, int]:
    """End the attempts of `updates` as finished where the fence matches; returns {pandaid: attemptnr}
    of the jobs finished here. The others (duplicate, stale, killed, another queue's job) are left
    untouched for the caller to diagnose. A job twice in `updates`: its first update counts and the
    next ones are duplicates, as when they arrive one by one.
    """
    first: dict[int, PilotUpdate] = {}
    for u in updates:
        first.setdefault(u.pandaid, u)
    batch = list(first.values())
    if not batch:
        return {}
    rows = fetch_prepared(FINISH_SQL, _params(batch, queues))
    for row in rows:
        if row[6]:
            _cluster_finished(int(row[0]), int(row[1]))
    with_final = [row[3] for row in rows if row[5]]
    if with_final:
        final_jobs_release(with_final)
    for pandaid, attemptnr, task_id, workflow_id, released, _, _ in (
        rows if log.isEnabledFor(logging.INFO) else ()
    ):
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


def _cluster_finished(pandaid: int, attemptnr: int) -> None:
    """A cluster job the statement finished: its members finish (`clusters.cluster_attempt_settle`)."""
    with transaction.atomic():
        cluster = Job.objects.get(pk=pandaid)
        cluster_attempt_settle(
            cluster=cluster,
            attemptnr=attemptnr,
            outcome=JobStatus.FINISHED,
            endtime=cluster.endtime or timezone.now(),
        )


def jobs_final_update(
    updates: Sequence[PilotUpdate], queues: frozenset[str] | None
) -> list[UpdateReply | None]:
    """End the attempts of the updates whose fence matches; one entry per update, in order: the
    reply (the job's status after the call: finished, failed, or defined for a retry), or None
    where nothing was written (unknown job, stale attempt or lease, duplicate, a job no longer in
    flight, another queue's job) for the caller to diagnose.

    The batch's `finished` updates are applied first, then its `failed` ones in order.
    """
    for u in updates:
        if u.status not in PILOT_FINAL:
            raise ValueError(f"a final update reports finished or failed, not {u.status!r}")
    replies: list[UpdateReply | None] = [None] * len(updates)
    finished = [i for i, u in enumerate(updates) if u.status == JobStatus.FINISHED]
    if finished and connection.vendor == "postgresql":
        ended = _jobs_finish_postgresql([updates[i] for i in finished], queues)
        for i in finished:
            if ended.pop(updates[i].pandaid, None) == updates[i].attemptnr:  # once: the next is a duplicate
                replies[i] = UpdateReply(command=None, status=JobStatus.FINISHED)
    else:
        for i in finished:
            replies[i] = job_final_update_generic(updates[i], queues)
    for i, u in enumerate(updates):
        if u.status == JobStatus.FAILED:
            replies[i] = job_final_update_generic(u, queues)
    return replies


def job_final_update_generic(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply | None:
    """The fence, then `job_attempt_end`, in one transaction; None when the fence does not match
    (nothing written). A failed attempt's path everywhere, a finished one's on SQLite, and the
    oracle of FINISH_SQL."""
    with transaction.atomic():
        row = (
            Job.objects.select_for_update(of=("self",))
            .filter(pandaid=update.pandaid)
            .values(
                "jobstatus",
                "attemptnr",
                "lease",
                "queue_id",
                "queue__require_lease",
                "starttime",
                "node",
                "pilot_id",
                "batch_id",
            )
            .first()
        )
        if row is None or not fence_matches(row, update, queues):
            return None
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
            metrics={k: update.metrics[k] for k in METRIC_NAMES if update.metrics.get(k) is not None},
            endtime=update.endtime,
        )
    if outcome is None:  # cannot happen under the row lock, but never report a write that did not occur
        return None
    return UpdateReply(command=None, status=outcome.status)
