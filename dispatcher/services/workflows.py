"""Workflow submission: validate a DAG in memory, then write it in one transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from dispatcher.models import Job
from dispatcher.services.transitions import task_count_deltas_add
from dispatcher.states import JobStatus

log = logging.getLogger(__name__)


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
