"""Submitting a workflow: validate in memory, then write it in one bulk transaction (tasks per
label, jobs, edges, files and counters), with COPY on PostgreSQL; and the spec as submitted.

The actions on a submitted workflow are `workflow_actions.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from dispatcher.brokerage import SiteRule
from dispatcher.models import File, Job, JobDependency, Queue, Task, Workflow
from dispatcher.services.job_insert import job_edges_insert, jobs_insert
from dispatcher.services.transitions import task_count_deltas_add
from dispatcher.states import JobStatus
from dispatcher.workflows import (
    ClusterRule,
    LabelSettings,
    NewJob,
    QueueLimits,
    cluster_rules,
    dag_check_caps,
    dag_check_queues,
    dag_clusters,
    dag_validate,
    spec_from_jobs,
    spec_parse,
)

log = logging.getLogger(__name__)


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
    cluster: Sequence[ClusterRule] | Mapping[str, Any] | None = None,
    check_queues: bool = True,
    sites: Mapping[str, SiteRule] | None = None,
) -> list[NewJob]:
    """All-or-nothing checks before any write; returns the nodes to write (clustered if asked).

    1. Caps, names, dependencies and cycles of the DAG as given (`dag_validate`).
    2. Every request fits some queue its label's `sites` allow (reads the queue table, writes
       nothing).
    3. Clustering (`dag_clusters`: the member jobs, then their cluster jobs), refused when the
       clusters would wait for each other.
    """
    dag_validate(jobs, max_jobs=max_dag_jobs(), max_edges=max_dag_edges())
    if check_queues:
        dag_check_queues(jobs, queue_limits(), sites)
    rules = cluster_rules(cluster)
    if not rules:
        return list(jobs)
    nodes = dag_clusters(jobs, rules)
    # Cluster jobs are rows too: the caps hold for what is written.
    dag_check_caps(
        jobs=len(nodes),
        edges=sum(len(job.parents) for job in nodes),
        max_jobs=max_dag_jobs(),
        max_edges=max_dag_edges(),
    )
    return nodes


# Above this many explicit jobs, a spec's job list is not copied into Workflow.spec: the job rows
# and edges hold the same nodes, and `workflow_spec_explicit` rebuilds the list from them. Storing a
# 25 MB list as JSONB would cost more than writing the 100,000 rows themselves.
SPEC_INLINE_JOBS = 5_000
JOBS_FROM_ROWS = "jobs_from_rows"


def workflow_submit_spec(
    *,
    owner: User,
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
            "is_final",
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
            files.get(pk, []), final,
        )
        for pk, name, label, command, memory, cores, walltime, disk, env, image, data_id, final in listed
    ]  # fmt: skip
    spec["jobs"] = spec_from_jobs(name=workflow.name, jobs=jobs)["jobs"]
    return spec


def workflow_submit(
    *,
    owner: User,
    name: str,
    jobs: Sequence[NewJob],
    priority: int = 500,
    spec: Mapping[str, Any] | None = None,
    labels: Mapping[str, LabelSettings] | None = None,
    cluster: Sequence[ClusterRule] | Mapping[str, Any] | None = None,
    check_queues: bool = True,
    workflow_fields: Mapping[str, Any] | None = None,
) -> Workflow:
    """Validate and write a workflow: tasks per label (chunked), jobs, edges, files and counters.

    `workflow_fields` are further Workflow columns set at creation (a campaign sets its group and
    attempt number this way). Returns the Workflow. Jobs start `defined` with `pending_parents` set; brokerage releases those
    with none pending. Final jobs start waiting (`pending_parents` 1, `services.final_jobs`). Everything is checked in memory first; the writes are one transaction, with
    COPY on PostgreSQL (`job_insert.jobs_insert`).
    """
    sites = {label: s.sites for label, s in (labels or {}).items() if s.sites}
    nodes = workflow_validate(jobs, cluster=cluster, check_queues=check_queues, sites=sites)
    with transaction.atomic():
        finals = [job.name for job in nodes if job.final]
        workflow = Workflow.objects.create(
            name=name,
            owner=owner,
            priority=priority,
            spec=dict(spec or {}),
            final_jobs=len(finals),
            **dict(workflow_fields or {}),
        )
        task_of = _tasks_create(
            workflow, nodes, _with_cluster_labels(nodes, labels or {}), owner.username, priority
        )
        ids = jobs_insert(workflow, nodes, task_of, owner.username, priority)
        if finals:
            # Final jobs wait for every other job of the workflow (services.final_jobs).
            Job.objects.filter(pandaid__in=[ids[n] for n in finals]).update(is_final=True, pending_parents=1)
        job_edges_insert(nodes, ids)
        workflow.task_edges = task_edges(nodes, task_of)
        Workflow.objects.filter(pk=workflow.pk).update(task_edges=workflow.task_edges)
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


def task_edges(nodes: Sequence[NewJob], task_of: Mapping[str, int]) -> list[list[int]]:
    """The task graph of a submission: [parent task, child task] for every job edge between two
    tasks, each pair once, sorted (what `Workflow.task_edges` stores)."""
    pairs = {(task_of[parent], task_of[job.name]) for job in nodes for parent in job.parents}
    return [[a, b] for a, b in sorted(pairs) if a != b]


def _with_cluster_labels(
    nodes: Sequence[NewJob], labels: Mapping[str, LabelSettings]
) -> dict[str, LabelSettings]:
    """The label settings, with a cluster label's taken from its first member's label (attempts,
    retry policy, sites; resources from the cluster job itself)."""
    out = dict(labels)
    first_label: dict[str, str] = {}
    for job in nodes:
        if job.cluster:
            first_label.setdefault(job.cluster, job.label)
    for job in nodes:
        if job.name in first_label and job.label not in out:
            base = labels.get(first_label[job.name])
            if base is not None:
                out[job.label] = dataclasses.replace(
                    base,
                    memory_mb=job.memory_mb,
                    cores=job.cores,
                    walltime_s=job.walltime_s,
                    disk_mb=job.disk_mb,
                )
    return out


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
                    failure_budget=(
                        dict(s.failure_budget) if isinstance(s.failure_budget, Mapping) else s.failure_budget
                    ),
                    learn_requests=dict(s.learn_requests) if s.learn_requests else None,
                )
            )
    Task.objects.bulk_create(rows)
    return {job.name: task.jeditaskid for task, part in zip(rows, members, strict=True) for job in part}


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
