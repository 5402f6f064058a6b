"""Writes of the dispatcher. Every job status change goes through `job_transition` or
`jobs_transition_bulk`: a compare-and-set UPDATE, a JobStatusLog row and counter deltas, in one
transaction (DESIGN §3).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from dispatcher.models import Job, JobStatusLog, TaskCount, TaskCountDelta
from dispatcher.states import JobStatus, TransitionRefused, transition_allowed

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
        selection = selection.filter(pandaid__in=list(pandaids))
    if where is not None:
        selection = selection.filter(where)
    selection = selection.order_by("pandaid")
    if limit is not None:
        selection = selection[:limit]
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
    log.info(
        "%d jobs: %s -> %s",
        len(ids),
        source,
        to,
        extra={
            "event": "jobs.transition",
            "count": len(ids),
            "jeditaskids": sorted(per_task),
            "from": source,
            "to": to,
            "cause": cause,
        },
    )
    return ids


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


# --- Workflow submission -------------------------------------------------------------------------


class WorkflowInvalid(ValueError):
    """A workflow that cannot be accepted; the message names the offending job or field."""


@dataclass
class NewJob:
    """One DAG node as handed to `workflow_submit` (the spec parsers produce these)."""

    name: str
    label: str
    command: str
    parents: Sequence[str] = ()
    memory_mb: int = 2000
    cores: int = 1
    walltime_s: int = 3600
    disk_mb: int = 1000
    priority: int | None = None
    environment: Mapping[str, str] | None = None
    container_image: str = ""
    data_id: Mapping[str, Any] | None = None


def dag_find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph child → parents as a path [a, b, …, a], or None when acyclic.

    1. Kahn's algorithm peels nodes without unfinished parents.
    2. Whatever is left lies on or behind a cycle; walk parent links from one of them until a node
       repeats, and return the loop.
    """
    indegree = dict.fromkeys(edges, 0)
    children: dict[str, list[str]] = {node: [] for node in edges}
    for child, parents in edges.items():
        for parent in parents:
            indegree[child] += 1
            children.setdefault(parent, []).append(child)
    ready = [node for node, d in indegree.items() if d == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in children.get(node, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen == len(indegree):
        return None
    start = next(node for node, d in indegree.items() if d > 0)
    path: list[str] = []
    position: dict[str, int] = {}
    node = start
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(p for p in edges[node] if indegree.get(p, 0) > 0)
    loop = path[position[node] :] + [node]
    return list(reversed(loop))


def workflow_validate(jobs: Sequence[NewJob]) -> None:
    """All-or-nothing checks before any write: names, dependencies, cycles."""
    names: set[str] = set()
    for job in jobs:
        if not job.name:
            raise WorkflowInvalid("a job has an empty name")
        if job.name in names:
            raise WorkflowInvalid(f"duplicate job name {job.name!r}")
        names.add(job.name)
    for job in jobs:
        for parent in job.parents:
            if parent not in names:
                raise WorkflowInvalid(f"job {job.name!r} depends on unknown job {parent!r}")
    cycle = dag_find_cycle({job.name: list(job.parents) for job in jobs})
    if cycle:
        raise WorkflowInvalid("dependency cycle: " + " -> ".join(cycle))


@transaction.atomic
def workflow_submit(
    *,
    owner: Any,
    name: str,
    jobs: Sequence[NewJob],
    priority: int = 500,
    spec: Mapping[str, Any] | None = None,
) -> Any:
    """Validate and write a workflow: one task per label, its jobs, edges and counters.

    Returns the Workflow. Jobs start `defined` with `pending_parents` set; brokerage releases those
    with none pending.
    """
    from dispatcher.models import JobDependency, Task, Workflow

    if not jobs:
        raise WorkflowInvalid("a workflow needs at least one job")
    workflow_validate(jobs)
    workflow = Workflow.objects.create(name=name, owner=owner, priority=priority, spec=dict(spec or {}))
    tasks: dict[str, Task] = {}
    for job in jobs:
        if job.label not in tasks:
            tasks[job.label] = Task.objects.create(
                workflow=workflow,
                label=job.label,
                name=f"{name}/{job.label}",
                username=owner.username,
                priority=priority,
                memory_mb=job.memory_mb,
                max_memory_mb=max(job.memory_mb, 64000),
                cores=job.cores,
                walltime_s=job.walltime_s,
                disk_mb=job.disk_mb,
            )
    rows = [
        Job(
            task=tasks[job.label],
            workflow=workflow,
            name=job.name,
            label=job.label,
            command=job.command,
            produsername=owner.username,
            currentpriority=job.priority if job.priority is not None else priority,
            pending_parents=len(job.parents),
            request_memory_mb=job.memory_mb,
            request_cores=job.cores,
            request_walltime_s=job.walltime_s,
            request_disk_mb=job.disk_mb,
            environment=dict(job.environment or {}),
            container_image=job.container_image,
            data_id=dict(job.data_id or {}),
        )
        for job in jobs
    ]
    Job.objects.bulk_create(rows, batch_size=5000)
    ids = {row.name: row.pandaid for row in rows}
    JobDependency.objects.bulk_create(
        [
            JobDependency(parent_id=ids[parent], child_id=ids[job.name])
            for job in jobs
            for parent in job.parents
        ],
        batch_size=5000,
    )
    per_task = Counter(job.label for job in jobs)
    task_count_deltas_add({(tasks[label].jeditaskid, JobStatus.DEFINED): n for label, n in per_task.items()})
    log.info(
        "workflow %s submitted: %d jobs in %d tasks",
        workflow.pk,
        len(jobs),
        len(tasks),
        extra={"event": "workflow.submit", "workflow_id": workflow.pk, "jobs": len(jobs)},
    )
    return workflow
