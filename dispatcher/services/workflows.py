"""Workflow writes: submission (validate in memory, then one bulk transaction) and the actions on a
submitted workflow — cancel, retry failed jobs, restart, boost priority, set memory.

Status changes go through `jobs_transition_bulk`; the other columns (priority, memory,
pending_parents) are set-based UPDATEs. Access checks are the callers' (`dispatcher.access`).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from dispatcher.brokerage import SiteRule
from dispatcher.models import File, Job, JobDependency, Queue, Task, Workflow
from dispatcher.queries import job_descendants, task_site_rules
from dispatcher.services.transitions import jobs_transition_bulk, task_count_deltas_add
from dispatcher.states import JOB_NON_FINAL, TASK_FINAL, JobStatus, TaskStatus, WorkflowStatus
from dispatcher.workflows import (
    LabelSettings,
    NewJob,
    QueueLimits,
    WorkflowInvalid,
    WorkflowTooLarge,
    dag_check_queues,
    dag_cluster,
    dag_find_cycle,
    dag_validate,
    spec_parse,
)

log = logging.getLogger(__name__)

__all__ = [
    "NewJob",
    "WorkflowInvalid",
    "WorkflowTooLarge",
    "dag_find_cycle",
    "jobs_set_memory",
    "workflow_boost_priority",
    "workflow_cancel",
    "workflow_restart",
    "workflow_retry",
    "workflow_spec_explicit",
    "workflow_submit",
    "workflow_submit_spec",
    "workflow_validate",
    "workflow_pause",
    "workflow_resume",
]


def _cap(key: str, default: int) -> int:
    return int(settings.AILURO.get(key, default))


def max_dag_jobs() -> int:
    return _cap("MAX_DAG_JOBS", 200_000)


def max_dag_edges() -> int:
    # Rubin gathers make edges outnumber jobs; ten per job allowed by default.
    return _cap("MAX_DAG_EDGES", 10 * max_dag_jobs())


def task_chunk_size() -> int:
    return _cap("TASK_CHUNK_SIZE", 30_000)


def queue_limits() -> list[QueueLimits]:
    """Every queue's static limits: a job no queue can run is refused at submission (offline
    queues count, since they come back)."""
    return [
        QueueLimits(
            name=q["name"],
            max_rss_mb=q["max_rss_mb"],
            max_cores=q["max_cores"],
            max_walltime_s=q["max_walltime_s"],
            max_disk_mb=q["max_disk_mb"],
            site=q["site__name"],
        )
        for q in Queue.objects.values(
            "name", "max_rss_mb", "max_cores", "max_walltime_s", "max_disk_mb", "site__name"
        )
    ]


def workflow_validate(
    jobs: Sequence[NewJob],
    *,
    cluster: Mapping[str, int] | None = None,
    check_queues: bool = True,
    sites: Mapping[str, SiteRule] | None = None,
) -> list[NewJob]:
    """All-or-nothing checks before any write; returns the nodes to write (clustered if asked).

    1. Caps, names, dependencies and cycles of the DAG as given (`dag_validate`).
    2. Every request fits some queue its label's `sites` allow (reads the queue table, writes
       nothing).
    3. Clustering, and the cycle check again on the clustered graph.
    """
    dag_validate(jobs, max_jobs=max_dag_jobs(), max_edges=max_dag_edges())
    if check_queues:
        dag_check_queues(jobs, queue_limits(), sites)
    if not cluster:
        return list(jobs)
    clustered = dag_cluster(jobs, cluster)
    loop = dag_find_cycle({job.name: job.parents for job in clustered})
    if loop:
        raise WorkflowInvalid("clustering makes a dependency cycle: " + " -> ".join(loop), field="cluster")
    return clustered


# Above this many explicit jobs, a spec's job list is not copied into Workflow.spec: the job rows
# and edges hold the same nodes, and `workflow_spec_explicit` rebuilds the list from them. Storing a
# 25 MB list as JSONB would cost more than writing the 100,000 rows themselves.
SPEC_INLINE_JOBS = 5_000
JOBS_FROM_ROWS = "jobs_from_rows"


def workflow_submit_spec(
    *,
    owner: Any,
    spec: Mapping[str, Any],
    name: str | None = None,
    workflow_fields: Mapping[str, Any] | None = None,
) -> Workflow:
    """Parse a loaded spec (`spec_load`) and submit it; the spec is kept on the workflow (big
    explicit job lists as rows, see SPEC_INLINE_JOBS). `workflow_fields` as for `workflow_submit`."""
    parsed = spec_parse(spec, max_jobs=max_dag_jobs(), max_edges=max_dag_edges())
    stored: Mapping[str, Any] = spec
    jobs_listed = spec.get("jobs") or []
    if len(jobs_listed) > SPEC_INLINE_JOBS and not parsed.cluster:
        stored = {**{k: v for k, v in spec.items() if k != "jobs"}, JOBS_FROM_ROWS: len(jobs_listed)}
    return workflow_submit(
        owner=owner,
        name=name or parsed.name,
        jobs=parsed.jobs,
        priority=parsed.priority,
        spec=stored,
        labels=parsed.labels,
        cluster=parsed.cluster,
        workflow_fields=workflow_fields,
    )


def workflow_spec_explicit(workflow: Workflow) -> dict[str, Any]:
    """The workflow's spec as submitted; a job list kept as rows is rebuilt in the explicit form
    (the same nodes, in submission order, with their dependencies and files)."""
    spec = dict(workflow.spec)
    if JOBS_FROM_ROWS not in spec:
        return spec
    del spec[JOBS_FROM_ROWS]
    from dispatcher.workflows import spec_from_jobs

    names: dict[int, str] = {}
    parents: dict[int, list[str]] = {}
    files: dict[int, list[dict[str, Any]]] = {}
    edges = (
        JobDependency.objects.filter(child__workflow=workflow)
        .order_by("id")
        .values_list("parent_id", "child_id")
    )
    rows = (
        Job.objects.filter(workflow=workflow)
        .order_by("pandaid")
        .values_list(
            "pandaid",
            "name",
            "label",
            "command",
            "request_memory_mb",
            "request_cores",
            "request_walltime_s",
            "request_disk_mb",
            "environment",
            "container_image",
            "data_id",
        )
    )
    listed = list(rows.iterator(chunk_size=10_000))
    names = {row[0]: row[1] for row in listed}
    for parent, child in edges.iterator(chunk_size=50_000):
        parents.setdefault(child, []).append(names[parent])
    file_columns = ("lfn", "role", "dataset", "scope", "guid", "size", "checksum", "location")
    for job_id, *values in File.objects.filter(job__workflow=workflow).values_list("job_id", *file_columns):
        entry = {k: v for k, v in zip(file_columns, values, strict=True) if v not in ("", None)}
        files.setdefault(job_id, []).append(entry)
    jobs = [
        NewJob(
            name, label, command, parents.get(pk, []), memory, cores, walltime, disk, None, env, image, data_id,
            files.get(pk, []),
        )
        for pk, name, label, command, memory, cores, walltime, disk, env, image, data_id in listed
    ]  # fmt: skip
    spec["jobs"] = spec_from_jobs(name=workflow.name, jobs=jobs)["jobs"]
    return spec


def workflow_submit(
    *,
    owner: Any,
    name: str,
    jobs: Sequence[NewJob],
    priority: int = 500,
    spec: Mapping[str, Any] | None = None,
    labels: Mapping[str, LabelSettings] | None = None,
    cluster: Mapping[str, int] | None = None,
    check_queues: bool = True,
    workflow_fields: Mapping[str, Any] | None = None,
) -> Workflow:
    """Validate and write a workflow: tasks per label (chunked), jobs, edges, files and counters.

    `workflow_fields` are further Workflow columns set at creation (a campaign sets its group and
    attempt number this way). Returns the Workflow. Jobs start `defined` with `pending_parents` set; brokerage releases those
    with none pending. Everything is checked in memory first; the writes are one transaction, with
    COPY on PostgreSQL (`_jobs_write`).
    """
    sites = {label: s.sites for label, s in (labels or {}).items() if s.sites}
    nodes = workflow_validate(jobs, cluster=cluster, check_queues=check_queues, sites=sites)
    with transaction.atomic():
        workflow = Workflow.objects.create(
            name=name, owner=owner, priority=priority, spec=dict(spec or {}), **dict(workflow_fields or {})
        )
        task_of = _tasks_create(workflow, nodes, labels or {}, owner.username, priority)
        ids = _jobs_write(workflow, nodes, task_of, owner.username, priority)
        _edges_write(nodes, ids)
        _files_write(nodes, ids)
        per_task = Counter(task_of[job.name] for job in nodes)
        task_count_deltas_add({(task_id, JobStatus.DEFINED): n for task_id, n in per_task.items()})
    log.info(
        "workflow %s submitted: %d jobs in %d tasks",
        workflow.pk,
        len(nodes),
        len(per_task),
        extra={"event": "workflow.submit", "workflow_id": workflow.pk, "jobs": len(nodes)},
    )
    return workflow


def _tasks_create(
    workflow: Workflow,
    nodes: Sequence[NewJob],
    labels: Mapping[str, LabelSettings],
    username: str,
    priority: int,
) -> dict[str, int]:
    """One task per label, split evenly into ceil(n / chunk size) tasks above the chunk size (as
    ctrl_bps_panda does); returns job name → jeditaskid."""
    by_label: dict[str, list[NewJob]] = {}
    for job in nodes:
        by_label.setdefault(job.label, []).append(job)
    chunk = task_chunk_size()
    default_attempts = int(settings.AILURO.get("DEFAULT_MAX_ATTEMPTS", 3))
    rows: list[Task] = []
    members: list[list[NewJob]] = []
    for label, jobs in by_label.items():
        first = jobs[0]
        s = labels.get(label) or LabelSettings(
            memory_mb=first.memory_mb, cores=first.cores, walltime_s=first.walltime_s, disk_mb=first.disk_mb
        )
        n_chunks = max(1, math.ceil(len(jobs) / chunk))
        per = math.ceil(len(jobs) / n_chunks)
        for k in range(n_chunks):
            part = jobs[k * per : (k + 1) * per]
            if not part:
                continue
            members.append(part)
            rows.append(
                Task(
                    workflow=workflow,
                    label=label,
                    chunk=k,
                    name=f"{workflow.name}/{label}" + (f"/{k}" if n_chunks > 1 else ""),
                    username=username,
                    priority=priority,
                    max_attempts=s.max_attempts or default_attempts,
                    memory_mb=s.memory_mb,
                    max_memory_mb=max(s.memory_mb, 64000),
                    cores=s.cores,
                    walltime_s=s.walltime_s,
                    disk_mb=s.disk_mb,
                    retry_policy=dict(s.retry_policy),
                    included_sites=list(s.sites.include),
                    excluded_sites=list(s.sites.exclude),
                )
            )
    Task.objects.bulk_create(rows)
    return {job.name: task.jeditaskid for task, part in zip(rows, members, strict=True) for job in part}


# The columns a submission sets per job, in the order `_job_row` returns them.
_JOB_COLUMNS = (
    "jeditaskid",
    "workflow_id",
    "name",
    "label",
    "data_id",
    "produsername",
    "currentpriority",
    "pending_parents",
    "command",
    "environment",
    "container_image",
    "request_memory_mb",
    "request_cores",
    "request_walltime_s",
    "request_disk_mb",
)


def _job_row(job: NewJob, task_id: int, workflow_id: int, username: str, priority: int) -> tuple[Any, ...]:
    return (
        task_id,
        workflow_id,
        job.name,
        job.label,
        dict(job.data_id or {}),
        username,
        job.priority if job.priority is not None else priority,
        len(job.parents),
        job.command,
        dict(job.environment or {}),
        job.container_image,
        job.memory_mb,
        job.cores,
        job.walltime_s,
        job.disk_mb,
    )


def _jobs_write(
    workflow: Workflow, nodes: Sequence[NewJob], task_of: Mapping[str, int], username: str, priority: int
) -> dict[str, int]:
    """Insert the job rows; returns job name → pandaid. One function per database vendor."""
    if connection.vendor == "postgresql":
        return _jobs_copy(workflow, nodes, task_of, username, priority)
    now = timezone.now()
    rows = []
    for job in nodes:
        values = dict(
            zip(_JOB_COLUMNS, _job_row(job, task_of[job.name], workflow.pk, username, priority), strict=True)
        )
        values["task_id"] = values.pop("jeditaskid")
        rows.append(Job(**values, statechangetime=now))
    Job.objects.bulk_create(rows, batch_size=2000)
    return {row.name: row.pandaid for row in rows}


# A new job was created and entered `defined` now: the monitor's time windows (statechangetime,
# PanDA's modificationtime) must show it from the start, not only after its first transition.
_STAMPED_AT_SUBMISSION = frozenset({"creationtime", "statechangetime"})

# COPY text format: backslash, tab, newline and carriage return are escaped; NULL is \N.
_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _copy_text(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return _JSON(value).translate(_COPY_ESCAPE)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value).translate(_COPY_ESCAPE)


def _jobs_copy(
    workflow: Workflow, nodes: Sequence[NewJob], task_of: Mapping[str, int], username: str, priority: int
) -> dict[str, int]:
    """PostgreSQL: reserve pandaids from the identity sequence, then COPY the rows as text.

    Raw SQL because COPY is the one way to load 100,000 rows in about a second (DESIGN §4 ingest).
    Every column is sent, since Django keeps defaults in Python, not in the table; the columns the
    submission does not set are one precomputed suffix shared by every line, so a row costs one
    string join.
    """
    now = timezone.now()
    set_here = {"pandaid", *_JOB_COLUMNS}
    constants = [f for f in Job._meta.concrete_fields if f.column not in set_here]
    suffix = "\t".join(
        _copy_text(now if f.attname in _STAMPED_AT_SUBMISSION else f.get_default()) for f in constants
    )
    columns = ", ".join(f'"{c}"' for c in ("pandaid", *_JOB_COLUMNS, *(f.column for f in constants)))
    escape = _COPY_ESCAPE
    user_text = username.translate(escape)
    workflow_text = str(workflow.pk)
    json_cache: dict[int, str] = {}

    def json_text(value: Mapping[str, Any] | None) -> str:
        if not value:
            return "{}"
        key = id(value)
        cached = json_cache.get(key)
        if cached is None:
            cached = _JSON(value).translate(escape)
            json_cache[key] = cached
        return cached

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('dispatcher_job', 'pandaid')) FROM generate_series(1, %s)",
            [len(nodes)],
        )
        pandaids = sorted(row[0] for row in cursor.fetchall())
        raw_cursor: Any = cursor.cursor
        with raw_cursor.copy(f"COPY dispatcher_job ({columns}) FROM STDIN") as copy:
            lines: list[str] = []
            for job, pandaid in zip(nodes, pandaids, strict=True):
                lines.append(
                    "\t".join(
                        (
                            str(pandaid),
                            str(task_of[job.name]),
                            workflow_text,
                            job.name.translate(escape),
                            job.label.translate(escape),
                            _JSON(job.data_id).translate(escape) if job.data_id else "{}",
                            user_text,
                            str(job.priority if job.priority is not None else priority),
                            str(len(job.parents)),
                            job.command.translate(escape),
                            json_text(job.environment),
                            job.container_image.translate(escape),
                            str(job.memory_mb),
                            str(job.cores),
                            str(job.walltime_s),
                            str(job.disk_mb),
                            suffix,
                        )
                    )
                )
                if len(lines) >= 5000:
                    copy.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                copy.write("\n".join(lines) + "\n")
    return {job.name: pandaid for job, pandaid in zip(nodes, pandaids, strict=True)}


def _edges_write(nodes: Sequence[NewJob], ids: Mapping[str, int]) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw_cursor: Any = cursor.cursor
            with raw_cursor.copy("COPY dispatcher_jobdependency (parent_id, child_id) FROM STDIN") as copy:
                lines: list[str] = []
                for job in nodes:
                    if not job.parents:
                        continue
                    child = str(ids[job.name])
                    lines.extend(f"{ids[parent]}\t{child}" for parent in job.parents)
                    if len(lines) >= 20000:
                        copy.write("\n".join(lines) + "\n")
                        lines.clear()
                if lines:
                    copy.write("\n".join(lines) + "\n")
        return
    JobDependency.objects.bulk_create(
        [
            JobDependency(parent_id=ids[parent], child_id=ids[job.name])
            for job in nodes
            for parent in job.parents
        ],
        batch_size=5000,
    )


def _files_write(nodes: Sequence[NewJob], ids: Mapping[str, int]) -> None:
    rows = [
        File(
            job_id=ids[job.name],
            lfn=f["lfn"],
            role=f.get("role", "input"),
            dataset=f.get("dataset", ""),
            scope=f.get("scope", ""),
            guid=f.get("guid", ""),
            size=f.get("size"),
            checksum=f.get("checksum", ""),
            location=f.get("location", ""),
        )
        for job in nodes
        for f in job.files
    ]
    if rows:
        File.objects.bulk_create(rows, batch_size=5000)


# --- actions on a submitted workflow ---------------------------------------------------------

# Columns of the previous attempt cleared when a job runs again (its history is in JobAttempt).
_RERUN_RESET: dict[str, Any] = {
    "queue_id": None,
    "resource_type": "",
    "pilot_id": "",
    "worker_id": None,
    "batch_id": "",
    "node": "",
    "lease": "",
    "cpu_time_s": None,
    "max_rss_kb": None,
    "max_pss_kb": None,
    "actual_cores": None,
    "piloterrorcode": 0,
    "piloterrordiag": "",
    "exeerrorcode": 0,
    "exeerrordiag": "",
    "transexitcode": 0,
    "ddmerrorcode": 0,
    "ddmerrordiag": "",
    "jobdispatchererrorcode": 0,
    "jobdispatchererrordiag": "",
    "superrorcode": 0,
    "superrordiag": "",
    "taskbuffererrorcode": 0,
    "taskbuffererrordiag": "",
    "brokerageerrorcode": 0,
    "brokerageerrordiag": "",
    "dispatched_at": None,
    "starttime": None,
    "endtime": None,
    "heartbeat_at": None,
    "retry_after": None,
}


def _selection(
    workflow_id: int,
    labels: Sequence[str] | None,
    pandaids: Sequence[int] | None,
    jobstatus: Sequence[str] | None = None,
) -> Q:
    """The jobs of a workflow an action applies to; each given part narrows it."""
    where = Q(workflow_id=workflow_id)
    if labels:
        where &= Q(label__in=list(labels))
    if pandaids:
        where &= Q(pandaid__in=list(pandaids))
    if jobstatus:
        unknown = sorted(set(jobstatus) - set(JobStatus.values))
        if unknown:
            raise WorkflowInvalid(f"unknown job status {unknown[0]!r}", field="jobstatus")
        where &= Q(jobstatus__in=list(jobstatus))
    return where


def _actor_name(actor: Any) -> str:
    return str(getattr(actor, "username", "") or actor or "")


@transaction.atomic
def workflow_cancel(
    *,
    workflow_id: int,
    actor: Any = None,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
) -> dict[str, int]:
    """Cancel every non-final job of the workflow (or of the selected labels / jobs).

    Jobs in flight are cancelled too: their pilot learns it at its next heartbeat. Without a
    selection the workflow itself is marked cancelled. Returns {"cancelled": n}.
    """
    _workflow_lock(workflow_id)
    where = _selection(workflow_id, labels, pandaids, jobstatus)
    cause = f"cancelled by {_actor_name(actor) or 'user'}"
    total = 0
    for source in sorted(JOB_NON_FINAL):
        total += len(jobs_transition_bulk(source=source, to=JobStatus.CANCELLED, cause=cause, where=where))
    now = timezone.now()
    if not labels and not pandaids and not jobstatus:
        Workflow.objects.filter(pk=workflow_id).update(
            status=WorkflowStatus.CANCELLED, ended_at=now, modified_at=now
        )
        Task.objects.filter(workflow_id=workflow_id).exclude(
            status__in=[TaskStatus.DONE, TaskStatus.FINISHED, TaskStatus.FAILED]
        ).update(status=TaskStatus.ABORTED, ended_at=now, modified_at=now)
    _action_log("workflow.cancel", workflow_id, actor, cancelled=total)
    return {"cancelled": total}


@transaction.atomic
def workflow_pause(
    *, workflow_id: int, actor: Any = None, labels: Sequence[str] | None = None
) -> dict[str, int]:
    """Hold a workflow's tasks (or the selected labels' tasks), as JEDI's pauseTask.

    1. Non-final tasks of the selection become `paused`; without a selection the workflow too.
    2. Their activated jobs go back to `defined` (a pilot can no longer get them); brokerage skips
       the jobs of paused tasks, so neither they nor children released meanwhile are placed.
    3. Jobs already dispatched run on and report as usual.
    Returns {"paused_tasks": n, "held": jobs taken back from their queues}; a final workflow is a
    409.
    """
    _workflow_lock(workflow_id)
    tasks = _tasks_selected(workflow_id, labels, "pause")
    now = timezone.now()
    paused = tasks.exclude(status=TaskStatus.PAUSED).update(status=TaskStatus.PAUSED, modified_at=now)
    held = jobs_transition_bulk(
        source=JobStatus.ACTIVATED,
        to=JobStatus.DEFINED,
        cause=f"paused by {_actor_name(actor) or 'user'}",
        where=Q(workflow_id=workflow_id, task__in=tasks),
        fields={"queue_id": None},
    )
    if not labels:
        Workflow.objects.filter(pk=workflow_id).update(status=WorkflowStatus.PAUSED, modified_at=now)
    _action_log("workflow.pause", workflow_id, actor, paused_tasks=paused, held=len(held))
    return {"paused_tasks": paused, "held": len(held)}


@transaction.atomic
def workflow_resume(
    *, workflow_id: int, actor: Any = None, labels: Sequence[str] | None = None
) -> dict[str, int]:
    """Release what `workflow_pause` held: the paused tasks (of the selection) run again and their
    jobs go back to brokerage; the rollup derives each task's and the workflow's state from its
    counts. Returns {"resumed_tasks": n}."""
    _workflow_lock(workflow_id)
    tasks = _tasks_selected(workflow_id, labels, "resume").filter(status=TaskStatus.PAUSED)
    now = timezone.now()
    resumed = tasks.update(status=TaskStatus.RUNNING, modified_at=now)
    still_paused = Task.objects.filter(workflow_id=workflow_id, status=TaskStatus.PAUSED).exists()
    if not still_paused:
        Workflow.objects.filter(pk=workflow_id, status=WorkflowStatus.PAUSED).update(
            status=WorkflowStatus.RUNNING, modified_at=now
        )
    _action_log("workflow.resume", workflow_id, actor, resumed_tasks=resumed)
    return {"resumed_tasks": resumed}


def _tasks_selected(workflow_id: int, labels: Sequence[str] | None, verb: str) -> QuerySet[Task]:
    """The non-final tasks of the workflow (of `labels`); refuses labels the workflow lacks and a
    workflow with nothing left to act on (409)."""
    tasks = Task.objects.filter(workflow_id=workflow_id)
    if labels:
        unknown = sorted(set(labels) - set(tasks.values_list("label", flat=True)))
        if unknown:
            raise WorkflowInvalid(f"workflow {workflow_id} has no label {unknown[0]!r}", field="labels")
        tasks = tasks.filter(label__in=list(labels))
    tasks = tasks.exclude(status__in=list(TASK_FINAL))
    if not tasks.exists():
        raise WorkflowInvalid(f"nothing to {verb}: every selected task has ended", status_code=409)
    return tasks


@transaction.atomic
def workflow_restart(
    *,
    workflow_id: int,
    actor: Any = None,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
) -> dict[str, int]:
    """Run failed, cancelled and pruned jobs again; finished jobs never re-run.

    1. Move the selected failed / cancelled / pruned jobs back to `defined` (attempt number + 1
       when their last attempt was dispatched), clearing the previous attempt's columns.
    2. Recompute `pending_parents` of the restarted jobs from their parents' states, so jobs
       whose parents all finished are released at once and the rest wait.
    3. Reopen the workflow and the touched tasks. Returns {"restarted": n}.
    """
    _workflow_lock(workflow_id)
    where = _selection(workflow_id, labels, pandaids, jobstatus)
    ids = _jobs_rerun(
        where,
        sources=(JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED),
        cause=f"restarted by {_actor_name(actor) or 'user'}",
    )
    _workflow_reopen(workflow_id, ids)
    _action_log("workflow.restart", workflow_id, actor, restarted=len(ids))
    return {"restarted": len(ids)}


@transaction.atomic
def workflow_retry(
    *,
    workflow_id: int,
    actor: Any = None,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
) -> dict[str, int]:
    """Retry the failed jobs (of the selection) and the jobs pruned because of them.

    Unlike restart, cancelled jobs stay cancelled. The pruned descendants are found by walking
    down the edges through pruned jobs only (a recursive CTE), then everything goes through the
    same re-run as restart. Returns {"retried": failed, "unpruned": pruned}.
    """
    _workflow_lock(workflow_id)
    failed = list(
        Job.objects.filter(
            _selection(workflow_id, labels, pandaids, jobstatus), jobstatus=JobStatus.FAILED
        ).values_list("pandaid", flat=True)
    )
    pruned = job_descendants(failed, jobstatus=JobStatus.PRUNED)
    cause = f"retried by {_actor_name(actor) or 'user'}"
    ids = _jobs_rerun(Q(pandaid__in=failed), sources=(JobStatus.FAILED,), cause=cause)
    ids += _jobs_rerun(Q(pandaid__in=pruned), sources=(JobStatus.PRUNED,), cause=cause)
    _workflow_reopen(workflow_id, ids)
    _action_log("workflow.retry", workflow_id, actor, retried=len(failed), unpruned=len(pruned))
    return {"retried": len(failed), "unpruned": len(pruned)}


def _jobs_rerun(where: Q, *, sources: Iterable[str], cause: str) -> list[int]:
    """Move the selected jobs in `sources` to `defined`, one bulk transition per (state, attempt,
    dispatched) group; the attempt number goes up only when the last attempt was handed out."""
    ids: list[int] = []
    for source in sources:
        groups = (
            Job.objects.filter(where, jobstatus=source)
            .order_by()
            .annotate(never=ExpressionWrapper(Q(dispatched_at__isnull=True), output_field=BooleanField()))
            .values_list("attemptnr", "never")
            .distinct()
        )
        for attemptnr, never_dispatched in sorted(set(groups)):
            new_attempt = attemptnr if never_dispatched else attemptnr + 1
            ids += jobs_transition_bulk(
                source=source,
                to=JobStatus.DEFINED,
                cause=cause,
                where=where & Q(attemptnr=attemptnr, dispatched_at__isnull=never_dispatched),
                fields={**_RERUN_RESET, "attemptnr": new_attempt},
            )
    _pending_parents_recompute(ids)
    return ids


def _pending_parents_recompute(pandaids: Sequence[int]) -> None:
    """pending_parents := parents not finished, for the given jobs (set-based, batched)."""
    for start in range(0, len(pandaids), 5000):
        batch = list(pandaids[start : start + 5000])
        placeholders = ", ".join(["%s"] * len(batch))
        sql = f"""
            UPDATE dispatcher_job SET pending_parents = (
                SELECT COUNT(*) FROM dispatcher_jobdependency d
                JOIN dispatcher_job p ON p.pandaid = d.parent_id
                WHERE d.child_id = dispatcher_job.pandaid AND p.jobstatus <> 'finished'
            )
            WHERE pandaid IN ({placeholders})
        """  # noqa: S608  (only placeholders are interpolated)
        with connection.cursor() as cursor:
            cursor.execute(sql, batch)


def _workflow_reopen(workflow_id: int, pandaids: Sequence[int]) -> None:
    if not pandaids:
        return
    now = timezone.now()
    Workflow.objects.filter(pk=workflow_id).update(
        status=WorkflowStatus.RUNNING, ended_at=None, modified_at=now
    )
    task_ids = set()
    for start in range(0, len(pandaids), 5000):
        task_ids |= set(
            Job.objects.filter(pandaid__in=pandaids[start : start + 5000]).values_list("task_id", flat=True)
        )
    Task.objects.filter(jeditaskid__in=task_ids).update(
        status=TaskStatus.RUNNING, ended_at=None, modified_at=now
    )


def _workflow_lock(workflow_id: int) -> None:
    """Serialise actions on one workflow (a cancel racing a restart would interleave otherwise)."""
    if not Workflow.objects.select_for_update().filter(pk=workflow_id).exists():
        raise Workflow.DoesNotExist(f"no workflow {workflow_id}")


@transaction.atomic
def workflow_boost_priority(
    *,
    workflow_id: int,
    priority: int | None = None,
    delta: int | None = None,
    actor: Any = None,
) -> dict[str, int]:
    """Set (`priority`) or raise (`delta`) the priority of the workflow, its tasks and its
    non-final jobs; brokerage and dispatch order by `currentpriority`. Returns {"jobs": n,
    "priority": new workflow priority}."""
    if (priority is None) == (delta is None):
        raise WorkflowInvalid("give either priority or delta", field="priority")
    _workflow_lock(workflow_id)
    now = timezone.now()
    jobs = Job.objects.filter(workflow_id=workflow_id, jobstatus__in=sorted(JOB_NON_FINAL))
    if priority is not None:
        Workflow.objects.filter(pk=workflow_id).update(priority=priority, modified_at=now)
        Task.objects.filter(workflow_id=workflow_id).update(priority=priority, modified_at=now)
        n = jobs.update(currentpriority=priority)
    else:
        Workflow.objects.filter(pk=workflow_id).update(priority=F("priority") + delta, modified_at=now)
        Task.objects.filter(workflow_id=workflow_id).update(priority=F("priority") + delta, modified_at=now)
        n = jobs.update(currentpriority=F("currentpriority") + delta)
    new = Workflow.objects.values_list("priority", flat=True).get(pk=workflow_id)
    _action_log("workflow.boost_priority", workflow_id, actor, jobs=n, priority=new)
    return {"jobs": n, "priority": new}


# States whose memory request may change: not yet dispatched, or final and restartable.
_MEMORY_SETTABLE = (
    JobStatus.DEFINED,
    JobStatus.ACTIVATED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.PRUNED,
)


@transaction.atomic
def jobs_set_memory(
    *,
    workflow_id: int,
    memory_mb: int,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
    actor: Any = None,
) -> dict[str, int]:
    """Set the memory request of the selected jobs that are not in flight or finished.

    1. Refuse a request no queue can satisfy for the selection's cores, walltime and disk (within
       each label's site constraints).
    2. Activated jobs go back to `defined` without a queue, so brokerage places them again on a
       queue that fits; defined and restartable final jobs are updated in place.
    3. With labels and no job selection, the labels' tasks take the new default too.
    Returns {"jobs": n}.
    """
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb < 1:
        raise WorkflowInvalid(f"memory_mb must be a positive integer, got {memory_mb!r}", field="memory_mb")
    _workflow_lock(workflow_id)
    where = _selection(workflow_id, labels, pandaids, jobstatus) & Q(jobstatus__in=_MEMORY_SETTABLE)
    shapes = (
        Job.objects.filter(where)
        .order_by()
        .values_list("label", "request_cores", "request_walltime_s", "request_disk_mb", "name")
    )
    probes: dict[tuple[str, int, int, int], str] = {}
    for label, cores, walltime, disk, name in shapes.iterator():
        probes.setdefault((label, cores, walltime, disk), name)
    dag_check_queues(
        [
            NewJob(name=name, label=lb, command="", memory_mb=memory_mb, cores=c, walltime_s=w, disk_mb=d)
            for (lb, c, w, d), name in probes.items()
        ],
        queue_limits(),
        {label: rule for _, label, rule in task_site_rules(Task.objects.filter(workflow_id=workflow_id))},
    )
    # In-place first: the activated jobs moved back below would otherwise be counted twice.
    n = Job.objects.filter(where).exclude(jobstatus=JobStatus.ACTIVATED).update(request_memory_mb=memory_mb)
    n += len(
        jobs_transition_bulk(
            source=JobStatus.ACTIVATED,
            to=JobStatus.DEFINED,
            cause=f"memory set to {memory_mb} MB by {_actor_name(actor) or 'user'}",
            where=where,
            fields={"queue_id": None, "request_memory_mb": memory_mb},
        )
    )
    if labels and not pandaids and not jobstatus:
        Task.objects.filter(workflow_id=workflow_id, label__in=list(labels)).update(
            memory_mb=memory_mb,
            max_memory_mb=Greatest(F("max_memory_mb"), memory_mb),
            modified_at=timezone.now(),
        )
    _action_log("jobs.set_memory", workflow_id, actor, jobs=n, memory_mb=memory_mb)
    return {"jobs": n}


def _action_log(event: str, workflow_id: int, actor: Any, **result: Any) -> None:
    log.info(
        "%s on workflow %s by %s: %s",
        event,
        workflow_id,
        _actor_name(actor) or "-",
        result,
        extra={"event": event, "workflow_id": workflow_id, "actor": _actor_name(actor), **result},
    )
