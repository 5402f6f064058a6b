"""Job status transitions. Every job status change goes through `job_transition` or
`jobs_transition_bulk`: a compare-and-set UPDATE, a JobStatusLog row, counter deltas (decision
0002) and, on PostgreSQL, the change feed's rows (decision 0006: written by the job trigger, or by
the set-based statement itself), in one transaction (docs/architecture.md, "Entities and states"
and "Hot paths").

Each operation has one write path; what differs between PostgreSQL and SQLite (the embedded run,
which may be slower but never means something else) sits next to it: `_pandaid_in` and
`_bulk_write` for `jobs_transition_bulk`, `_fold_write` for `task_counts_fold` and
`queue_counts_fold`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import BooleanField, Count, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from dispatcher.changefeed import JOB_CHANGE_COLUMNS, job_change_pairs_sql, set_based_changes
from dispatcher.models import Job, JobStatusLog, TaskCount, TaskCountDelta
from dispatcher.services.final_jobs import final_jobs_release, workflows_with_final_jobs
from dispatcher.states import JOB_FINAL, QUEUE_LOAD_KINDS, JobStatus, TransitionRefused, transition_allowed

log = logging.getLogger(__name__)

# Columns a transition may set alongside the status (attempt bookkeeping, errors, metrics, times).
_TRANSITION_FIELDS = frozenset(f.attname for f in Job._meta.concrete_fields) - {
    "pandaid",
    "jobstatus",
    "task_id",
    "workflow_id",
}


@dataclass(frozen=True)
class TransitionResult:
    pandaid: int
    previous: str
    status: str
    attemptnr: int


def task_count_deltas_add(deltas: Mapping[tuple[int, str], int]) -> None:
    """Append counter deltas ((task id, status) → change). Zero changes are skipped."""
    rows = [
        TaskCountDelta(task_id=task_id, jobstatus=status, delta=delta)
        for (task_id, status), delta in sorted(deltas.items())
        if delta
    ]
    if rows:
        TaskCountDelta.objects.bulk_create(rows)


_FIELDS_BY_ATTNAME = {f.attname: f for f in Job._meta.concrete_fields}
_ATTNAME_BY_COLUMN = {f.column: f.attname for f in Job._meta.concrete_fields}


def _check_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - _TRANSITION_FIELDS
    if unknown:
        raise ValueError(f"job_transition cannot set {', '.join(sorted(unknown))}")


@transaction.atomic
def job_transition(
    *,
    pandaid: int,
    to: str,
    cause: str,
    expect: str | None = None,
    attemptnr: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> TransitionResult | None:
    """Move one job to `to`. Returns the transition, or None when the job is not in the expected
    state or attempt any more (someone else won the race). Raises TransitionRefused when the state
    machine has no such edge, and Job.DoesNotExist for an unknown pandaid.

    1. Lock the row (FOR UPDATE on PostgreSQL; SQLite holds the write lock for the transaction).
    2. Give up if `attemptnr` or `expect` no longer match; refuse edges outside the table.
    3. Compare-and-set UPDATE on (pandaid, status, attemptnr) — a second guard against lost races.
    4. Write the status log row and the counter deltas.
    5. A job of a workflow with final jobs that ends: `final_jobs_release`.
    """
    target = JobStatus(to)
    fields = dict(fields or {})
    _check_fields(fields)
    row = (
        Job.objects.select_for_update(of=("self",))
        .filter(pandaid=pandaid)
        .values("jobstatus", "attemptnr", "task_id", "workflow_id", "workflow__final_jobs")
        .first()
    )
    if row is None:
        raise Job.DoesNotExist(f"no job with pandaid {pandaid}")
    current = row["jobstatus"]
    if attemptnr is not None and row["attemptnr"] != attemptnr:
        return None
    if expect is not None and current != expect:
        return None
    if not transition_allowed(current, target):
        raise TransitionRefused(pandaid, current, target)
    now = timezone.now()
    fields.setdefault("statechangetime", now)
    updated = Job.objects.filter(pandaid=pandaid, jobstatus=current, attemptnr=row["attemptnr"]).update(
        jobstatus=target, **fields
    )
    if not updated:
        return None
    new_attempt = int(fields.get("attemptnr", row["attemptnr"]))
    JobStatusLog.objects.create(
        job_id=pandaid, attemptnr=new_attempt, jobstatus=target, previous=current, time=now, cause=cause[:300]
    )
    task_count_deltas_add({(row["task_id"], current): -1, (row["task_id"], target): +1})
    if row["workflow__final_jobs"] and target in JOB_FINAL:
        final_jobs_release([row["workflow_id"]])
    log.info(
        "job %s: %s -> %s",
        pandaid,
        current,
        target,
        extra={
            "event": "job.transition",
            "pandaid": pandaid,
            "jeditaskid": row["task_id"],
            "from": current,
            "to": str(target),
            "cause": cause,
        },
    )
    return TransitionResult(pandaid=pandaid, previous=current, status=target, attemptnr=new_attempt)


@transaction.atomic
def jobs_transition_bulk(
    *,
    source: str,
    to: str,
    cause: str,
    pandaids: Sequence[int] | None = None,
    where: Q | None = None,
    fields: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> list[int]:
    """Move every job in `source` selected by `pandaids` and/or `where` (at most `limit`, in
    pandaid order) to `to`; returns their ids in pandaid order. `fields` are values (no expressions).

    Set-based, whatever the number of jobs:

    1. `sel`: the selection in pandaid order, locked (FOR UPDATE on PostgreSQL, in pk order, so two
       bulk transitions cannot deadlock each other; SQLite's IMMEDIATE transaction holds the write
       lock), with the job's change-feed tuple as it is under the lock;
    2. the compare-and-set UPDATE of the selected rows still in `source`;
    3. from the rows it updated: one status-log row each, the per-task counter deltas and, on
       PostgreSQL, the per-queue ones (`QUEUE_LOAD_KINDS`; the triggers skip these rows);
    4. on PostgreSQL, the change-feed pairs of the UPDATE (`dispatcher/changefeed.py`);
    5. into a final state: the final jobs of the workflows that have some (`final_jobs_release`).
    """
    if not transition_allowed(source, to):
        raise TransitionRefused(0, source, to)
    fields = dict(fields or {})
    _check_fields(fields)
    if any(hasattr(v, "resolve_expression") for v in fields.values()):
        raise ValueError("jobs_transition_bulk sets values, not expressions")
    selection = Job.objects.filter(jobstatus=source)
    if pandaids is not None:
        selection = selection.filter(_pandaid_in(pandaids))
    if where is not None:
        selection = selection.filter(where)
    selection = selection.order_by("pandaid")
    if limit is not None:
        selection = selection[:limit]
    locked = selection.select_for_update().values_list(
        "pandaid", *(_ATTNAME_BY_COLUMN[c] for c in JOB_CHANGE_COLUMNS)
    )
    try:
        sel_sql, sel_params = locked.query.sql_with_params()
    except EmptyResultSet:  # e.g. `where` selects no pandaid at all
        return []
    now = timezone.now()
    fields.setdefault("statechangetime", now)
    sets = ['"jobstatus" = %s']
    set_params: list[Any] = [to]
    for attname, value in sorted(fields.items()):
        field = _FIELDS_BY_ATTNAME[attname]
        sets.append(f'"{field.column}" = %s')
        set_params.append(field.get_db_prep_save(value, connection))
    old_names = ", ".join(f"old_{c}" for c in JOB_CHANGE_COLUMNS)
    with_sel = f"WITH sel (pandaid, {old_names}) AS ({sel_sql})"
    update = f"""
        UPDATE dispatcher_job AS j SET {", ".join(sets)} FROM sel
        WHERE j.pandaid = sel.pandaid AND j.jobstatus = %s RETURNING"""  # noqa: S608  (model columns)
    rows = _bulk_write(
        with_sel,
        update,
        [*sel_params, *set_params, source],
        source=source,
        to=to,
        cause=cause[:300],
        now=now,
    )
    if rows:
        per_task = Counter(task_id for _, task_id in rows)
        _log_bulk(len(rows), per_task, source, to, cause)
        if to in JOB_FINAL:
            final_jobs_release(workflows_with_final_jobs(per_task))
    return [pandaid for pandaid, _ in rows]


def _pandaid_in(pandaids: Sequence[int]) -> Q | RawSQL:
    if connection.vendor == "postgresql":
        # One array parameter instead of one placeholder per id (5,000 in a brokerage step).
        return RawSQL('"dispatcher_job"."pandaid" = ANY(%s::bigint[])', (list(pandaids),), BooleanField())
    return Q(pandaid__in=list(pandaids))


def _bulk_write(
    with_sel: str, update: str, params: list[Any], *, source: str, to: str, cause: str, now: Any
) -> list[tuple[int, int]]:
    """Steps 2–4 of `jobs_transition_bulk`: the UPDATE (`with_sel` + `update`, ending in
    RETURNING), the status log, the counter deltas and the change feed; returns (pandaid, task id)
    of the moved jobs in pandaid order.

    PostgreSQL: ONE statement, the UPDATE in a CTE whose rows (new tuple and old, `old_`) feed the
    log, the counter deltas and the change-feed pairs, under `set_based_changes` so the row trigger
    skips these rows. SQLite has no data-modifying CTEs and no change feed: the UPDATE … RETURNING,
    then the log rows and counter deltas of the rows it returned.
    """
    if connection.vendor == "postgresql":
        new_cols = ", ".join(f"j.{c}" for c in JOB_CHANGE_COLUMNS)
        old_cols = ", ".join(f"sel.old_{c}" for c in JOB_CHANGE_COLUMNS)
        sql = f"""
            {with_sel},
            upd AS ({update} j.pandaid, {new_cols}, {old_cols}),
            logged AS (
                INSERT INTO dispatcher_jobstatuslog (job_id, attemptnr, jobstatus, previous, time, cause)
                SELECT pandaid, attemptnr, %s, %s, %s, %s FROM upd
            ),
            counted AS (
                INSERT INTO dispatcher_taskcountdelta (jeditaskid, jobstatus, delta)
                SELECT upd.jeditaskid, v.status, SUM(v.delta) FROM upd
                CROSS JOIN LATERAL (VALUES (%s, -1), (%s, 1)) AS v(status, delta)
                GROUP BY upd.jeditaskid, v.status
            ),
            queued AS (
                INSERT INTO dispatcher_queuecountdelta (computingsite, kind, delta)
                SELECT v.queue, v.kind, SUM(v.delta) FROM upd
                CROSS JOIN LATERAL (VALUES (upd.old_computingsite, %s, -1), (upd.computingsite, %s, 1))
                    AS v(queue, kind, delta)
                WHERE v.queue IS NOT NULL AND v.kind IS NOT NULL
                GROUP BY v.queue, v.kind HAVING SUM(v.delta) <> 0
            ),
            changes AS ({job_change_pairs_sql("upd")})
            SELECT pandaid, jeditaskid FROM upd ORDER BY pandaid
        """  # noqa: S608  (column names from the model and the change feed's constant lists; values are parameters)
        with set_based_changes(), connection.cursor() as cursor:
            cursor.execute(
                sql,
                [
                    *params,
                    to,
                    source,
                    now,
                    cause,
                    source,
                    to,
                    QUEUE_LOAD_KINDS.get(source),
                    QUEUE_LOAD_KINDS.get(to),
                ],
            )
            return [(int(p), int(t)) for p, t in cursor.fetchall()]
    with connection.cursor() as cursor:
        cursor.execute(f"{with_sel} {update} pandaid, jeditaskid, attemptnr", params)
        moved = sorted(cursor.fetchall())
    JobStatusLog.objects.bulk_create(
        [
            JobStatusLog(
                job_id=pandaid, attemptnr=attempt, jobstatus=to, previous=source, time=now, cause=cause
            )
            for pandaid, _, attempt in moved
        ],
        batch_size=5000,
    )
    per_task = Counter(task_id for _, task_id, _ in moved)
    deltas: dict[tuple[int, str], int] = {}
    for task_id, n in per_task.items():
        deltas[(task_id, source)] = -n
        deltas[(task_id, to)] = n
    task_count_deltas_add(deltas)
    return [(int(p), int(t)) for p, t, _ in moved]


def _log_bulk(n: int, per_task: Counter[int], source: str, to: str, cause: str) -> None:
    log.info(
        "%d jobs: %s -> %s",
        n,
        source,
        to,
        extra={
            "event": "jobs.transition",
            "count": n,
            "jeditaskids": sorted(per_task),
            "from": source,
            "to": to,
            "cause": cause,
        },
    )


@dataclass(frozen=True)
class _Counter:
    """A family of counters kept as deltas: where the deltas go, where they are folded to, the two
    key columns of a count (what is counted, and its state or kind), and the advisory lock that
    keeps its folds apart."""

    deltas: str
    counts: str
    key: str  # "jeditaskid, jobstatus"
    lock: int

    def move_sql(self) -> str:
        # The oldest `batch` deltas (%s), deleted and returned: a delta committed meanwhile is
        # folded now or by the next fold, never lost.
        return f"""
            DELETE FROM {self.deltas}
            WHERE id IN (SELECT id FROM {self.deltas} ORDER BY id LIMIT %s)
            RETURNING {self.key}, delta
        """  # noqa: S608  (constant names)

    def upsert_sql(self, rows: str) -> str:
        return f"""
            INSERT INTO {self.counts} ({self.key}, count) {rows}
            ON CONFLICT ({self.key}) DO UPDATE SET count = {self.counts}.count + excluded.count
        """  # noqa: S608  (constant names)


# "ailuro" + 1 and + 2: the advisory lock ids of the two folds.
_TASK_COUNTS = _Counter(
    "dispatcher_taskcountdelta", "dispatcher_taskcount", "jeditaskid, jobstatus", 0x61696C75726F01
)
_QUEUE_COUNTS = _Counter(
    "dispatcher_queuecountdelta", "dispatcher_queuecount", "computingsite, kind", 0x61696C75726F02
)
# A job row's kind in the queue counts (QUEUE_LOAD_KINDS); NULL for a state they do not count.
_QUEUE_KIND_SQL = "CASE jobstatus {} END".format(
    " ".join(f"WHEN '{status}' THEN '{kind}'" for status, kind in QUEUE_LOAD_KINDS.items())
)


def task_counts_fold(*, batch: int = 50_000) -> int:
    """Fold up to `batch` counter deltas into TaskCount; returns how many deltas were folded.

    The rollup loop calls this under its lease. One write path: in one transaction, the oldest
    deltas are deleted and returned, summed per (task, state) and added to the counts with an
    upsert. Folds never interleave (a second fold could otherwise apply a −1 whose +1 the first one
    holds uncommitted). `_fold_write` holds the database specifics.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        return _fold_write(cursor, batch, _TASK_COUNTS)


def queue_counts_fold(*, batch: int = 50_000) -> int:
    """Fold up to `batch` per-queue deltas into QueueCount as `task_counts_fold` does; returns how
    many were folded. Only PostgreSQL appends them (its triggers and `jobs_transition_bulk`)."""
    with transaction.atomic(), connection.cursor() as cursor:
        return _fold_write(cursor, batch, _QUEUE_COUNTS)


def _fold_write(cursor: Any, batch: int, counter: _Counter) -> int:
    """PostgreSQL: an advisory lock keeps folds apart, and the DELETE … RETURNING feeds the upsert
    in the same statement. SQLite (no data-modifying CTEs): the IMMEDIATE transaction's write lock
    keeps folds apart; the returned rows are summed here and upserted."""
    if connection.vendor == "postgresql":
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [counter.lock])
        rows = f"SELECT {counter.key}, delta FROM summed ORDER BY {counter.key}"  # noqa: S608
        cursor.execute(
            f"""
            WITH moved AS ({counter.move_sql()}),
            summed AS (
                SELECT {counter.key}, SUM(delta) AS delta, COUNT(*) AS n
                FROM moved GROUP BY {counter.key}
            ),
            upserted AS ({counter.upsert_sql(rows)})
            SELECT COALESCE(SUM(n), 0) FROM summed
            """,  # noqa: S608  (constant SQL)
            [batch],
        )
        (folded,) = cursor.fetchone()
        return int(folded)
    cursor.execute(counter.move_sql(), [batch])
    moved = cursor.fetchall()
    sums: Counter[tuple[Any, str]] = Counter()
    for key, state, delta in moved:
        sums[(key, state)] += delta
    cursor.executemany(
        counter.upsert_sql("VALUES (%s, %s, %s)"),
        [(key, state, delta) for (key, state), delta in sorted(sums.items())],
    )
    return len(moved)


def queue_counts_rebuild() -> int:
    """Recount QueueCount from the job rows, with writers locked out meanwhile (repair tool, and
    the seeders that load jobs with the triggers off); returns the number of counted jobs. No-op on
    SQLite, whose queue counts are read from the job rows."""
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatcher_job IN SHARE MODE")  # writers wait; readers go on
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_QUEUE_COUNTS.lock])
        cursor.execute("DELETE FROM dispatcher_queuecountdelta")
        cursor.execute("DELETE FROM dispatcher_queuecount")
        cursor.execute(
            f"""
            INSERT INTO dispatcher_queuecount (computingsite, kind, count)
            SELECT computingsite, {_QUEUE_KIND_SQL}, count(*) FROM dispatcher_job
            WHERE computingsite IS NOT NULL AND jobstatus = ANY(%s) GROUP BY 1, 2
            RETURNING count
            """,  # noqa: S608  (the kinds' constant CASE)
            [list(QUEUE_LOAD_KINDS)],
        )
        return sum(int(n) for (n,) in cursor.fetchall())


def task_counts_recompute(*, task_id: int) -> dict[str, int]:
    """Rebuild one task's counters from its job rows (repair tool and test oracle)."""
    with transaction.atomic():
        # Lock the task's jobs so no transition slips in between the count and the rewrite.
        list(Job.objects.select_for_update().filter(task_id=task_id).values_list("pandaid", flat=True))
        exact = {
            row["jobstatus"]: row["n"]
            for row in Job.objects.filter(task_id=task_id)
            .order_by()
            .values("jobstatus")
            .annotate(n=Count("pandaid"))
        }
        TaskCountDelta.objects.filter(task_id=task_id).delete()
        TaskCount.objects.filter(task_id=task_id).delete()
        TaskCount.objects.bulk_create(
            [TaskCount(task_id=task_id, jobstatus=s, count=n) for s, n in exact.items()]
        )
    return exact
