"""Job status transitions. Every job status change goes through `job_transition` or
`jobs_transition_bulk`: a compare-and-set UPDATE, a JobStatusLog row and counter deltas, in one
transaction (DESIGN §3).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import BooleanField, Count, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from dispatcher.models import Job, JobStatusLog, TaskCount, TaskCountDelta
from dispatcher.states import JobStatus, TransitionRefused, transition_allowed
from pandamon import rollup_sql

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


@contextmanager
def set_based_deltas() -> Iterator[None]:
    """Around ONE statement that appends the monitor deltas of its own job UPDATE
    (`pandamon.rollup_sql.job_delta_pairs_sql`): the row trigger skips that statement's rows
    (its WHEN clause reads this transaction-local setting), so no row is counted twice or missed.

    Must run inside a transaction (the setting is SET LOCAL). It is cleared right after the
    statement; if the statement fails, the transaction or savepoint that catches the error rolls the
    setting back with it, as there is no savepoint between the two.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("set_based_deltas needs a transaction")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', true)", [rollup_sql.INLINE_DELTAS_SETTING])
        yield
        cursor.execute("SELECT set_config(%s, 'off', true)", [rollup_sql.INLINE_DELTAS_SETTING])


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
    """
    target = JobStatus(to)
    fields = dict(fields or {})
    _check_fields(fields)
    row = (
        Job.objects.select_for_update()
        .filter(pandaid=pandaid)
        .values("jobstatus", "attemptnr", "task_id")
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
    """Move every job in `source` selected by `pandaids` and/or `where` to `to`; returns their ids.

    Set-based: one locking SELECT in pandaid order (locks are taken in pk order, so two bulk
    transitions cannot deadlock each other), one UPDATE, one bulk insert of log rows and one of
    counter deltas, whatever the number of jobs.
    """
    if not transition_allowed(source, to):
        raise TransitionRefused(0, source, to)
    fields = dict(fields or {})
    _check_fields(fields)
    selection = Job.objects.filter(jobstatus=source)
    if pandaids is not None:
        if connection.vendor == "postgresql":
            # One array parameter instead of one placeholder per id (5,000 in a brokerage step).
            selection = selection.filter(
                RawSQL('"dispatcher_job"."pandaid" = ANY(%s::bigint[])', (list(pandaids),), BooleanField())
            )
        else:
            selection = selection.filter(pandaid__in=list(pandaids))
    if where is not None:
        selection = selection.filter(where)
    selection = selection.order_by("pandaid")
    if limit is not None:
        selection = selection[:limit]
    if connection.vendor == "postgresql" and not any(
        hasattr(v, "resolve_expression") for v in fields.values()
    ):
        return _jobs_transition_bulk_postgresql(selection, source=source, to=to, cause=cause, fields=fields)
    rows = list(selection.select_for_update().values_list("pandaid", "task_id", "attemptnr"))
    if not rows:
        return []
    now = timezone.now()
    fields.setdefault("statechangetime", now)
    ids = [pandaid for pandaid, _, _ in rows]
    for start in range(0, len(ids), 5000):
        Job.objects.filter(pandaid__in=ids[start : start + 5000], jobstatus=source).update(
            jobstatus=to, **fields
        )
    JobStatusLog.objects.bulk_create(
        [
            JobStatusLog(
                job_id=pandaid,
                attemptnr=int(fields.get("attemptnr", attempt)),
                jobstatus=to,
                previous=source,
                time=now,
                cause=cause[:300],
            )
            for pandaid, _, attempt in rows
        ],
        batch_size=5000,
    )
    per_task = Counter(task_id for _, task_id, _ in rows)
    deltas: dict[tuple[int, str], int] = {}
    for task_id, n in per_task.items():
        deltas[(task_id, source)] = -n
        deltas[(task_id, to)] = n
    task_count_deltas_add(deltas)
    _log_bulk(len(ids), per_task, source, to, cause)
    return ids


def _jobs_transition_bulk_postgresql(
    selection: Any, *, source: str, to: str, cause: str, fields: dict[str, Any]
) -> list[int]:
    """`jobs_transition_bulk` on PostgreSQL: ONE statement whatever the number of jobs.

    1. `sel`: the selection, locked in pandaid order (Django compiles it: `where`, `limit`), with
       the summarised columns as they are under the lock;
    2. `upd`: the compare-and-set UPDATE (still in `source`), returning new and old tuples;
    3. `logged`, `counted`: the status-log rows and the per-task counter deltas, set-based;
    4. `deltas`: the monitor rollup deltas of the UPDATE, set-based, under `set_based_deltas` so
       the row trigger skips these rows (pandamon/rollup_sql.py, decision 0003).
    """
    now = timezone.now()
    fields.setdefault("statechangetime", now)
    delta_cols = rollup_sql.JOB_DELTA_COLUMNS
    locked = selection.select_for_update().values_list(
        "pandaid", *(_ATTNAME_BY_COLUMN[c] for c in delta_cols)
    )
    try:
        sel_sql, sel_params = locked.query.sql_with_params()
    except EmptyResultSet:  # e.g. `where` selects no pandaid at all
        return []
    sets = ['"jobstatus" = %s']
    set_params: list[Any] = [to]
    for attname, value in sorted(fields.items()):
        field = _FIELDS_BY_ATTNAME[attname]
        sets.append(f'"{field.column}" = %s')
        set_params.append(field.get_db_prep_save(value, connection))
    new_cols = ", ".join(f"j.{c}" for c in delta_cols)
    old_names = ", ".join(f"old_{c}" for c in delta_cols)
    old_cols = ", ".join(f"sel.old_{c}" for c in delta_cols)
    sql = f"""
        WITH sel (pandaid, {old_names}) AS ({sel_sql}),
        upd AS (
            UPDATE dispatcher_job AS j SET {", ".join(sets)} FROM sel
            WHERE j.pandaid = sel.pandaid AND j.jobstatus = %s
            RETURNING j.pandaid, {new_cols}, {old_cols}
        ),
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
        deltas AS ({rollup_sql.job_delta_pairs_sql("upd")})
        SELECT pandaid, jeditaskid FROM upd ORDER BY pandaid
    """  # noqa: S608  (column names from the model and the rollup's constant lists; values are parameters)
    params = [
        *sel_params,
        *set_params,
        source,
        to,
        source,
        now,
        cause[:300],
        source,
        to,
    ]
    with set_based_deltas(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return []
    _log_bulk(len(rows), Counter(task_id for _, task_id in rows), source, to, cause)
    return [pandaid for pandaid, _ in rows]


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


def task_counts_fold(*, batch: int = 50_000) -> int:
    """Fold up to `batch` counter deltas into TaskCount; returns how many deltas were folded.

    The rollup loop calls this under its lease. One function per database vendor: on PostgreSQL a
    single DELETE … RETURNING feeds the upsert, so a delta committed concurrently is either folded
    or left for the next run, never lost; SQLite's IMMEDIATE transaction excludes other writers.
    """
    if connection.vendor == "postgresql":
        return _task_counts_fold_postgresql(batch)
    return _task_counts_fold_sqlite(batch)


_FOLD_LOCK_KEY = 0x61696C75726F01  # "ailuro" + 1: the advisory lock id of the counter fold


def _task_counts_fold_postgresql(batch: int) -> int:
    sql = """
        WITH moved AS (
            DELETE FROM dispatcher_taskcountdelta
            WHERE id IN (SELECT id FROM dispatcher_taskcountdelta ORDER BY id LIMIT %s)
            RETURNING jeditaskid, jobstatus, delta
        ), summed AS (
            SELECT jeditaskid, jobstatus, SUM(delta) AS delta, COUNT(*) AS n FROM moved GROUP BY jeditaskid, jobstatus
        ), upserted AS (
            INSERT INTO dispatcher_taskcount (jeditaskid, jobstatus, count)
            SELECT jeditaskid, jobstatus, delta FROM summed ORDER BY jeditaskid, jobstatus
            ON CONFLICT (jeditaskid, jobstatus) DO UPDATE SET count = dispatcher_taskcount.count + EXCLUDED.count
        )
        SELECT COALESCE(SUM(n), 0) FROM summed
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # Folds must not interleave: a second fold could otherwise apply a -1 whose +1 the first
        # one holds uncommitted, and trip the non-negative check. The lock ends with the transaction.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_FOLD_LOCK_KEY])
        cursor.execute(sql, [batch])
        (folded,) = cursor.fetchone()
    return int(folded)


def _task_counts_fold_sqlite(batch: int) -> int:
    with transaction.atomic():
        ids = list(TaskCountDelta.objects.order_by("id").values_list("id", flat=True)[:batch])
        if not ids:
            return 0
        sums: Counter[tuple[int, str]] = Counter()
        for task_id, status, delta in TaskCountDelta.objects.filter(id__lte=ids[-1]).values_list(
            "task_id", "jobstatus", "delta"
        ):
            sums[(task_id, status)] += delta
        _upsert_counts(sums.items())
        TaskCountDelta.objects.filter(id__lte=ids[-1]).delete()
    return len(ids)


def _upsert_counts(items: Iterable[tuple[tuple[int, str], int]]) -> None:
    sql = """
        INSERT INTO dispatcher_taskcount (jeditaskid, jobstatus, count) VALUES (%s, %s, %s)
        ON CONFLICT (jeditaskid, jobstatus) DO UPDATE SET count = dispatcher_taskcount.count + excluded.count
    """
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(task_id, status, delta) for (task_id, status), delta in sorted(items)])


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
