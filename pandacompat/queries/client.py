"""Named reads of panda-client's job and task calls (`pandacompat.views_client`)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from django.db.models import F

from dispatcher.models import File, Job, Task
from dispatcher.queries import task_state_counts
from dispatcher.states import task_status_derive

JOB_COLUMNS = (
    "pandaid",
    "workflow_id",
    "task_id",
    "name",
    "label",
    "jobstatus",
    "prodsourcelabel",
    "produsername",
    "attemptnr",
    "currentpriority",
    "queue_id",
    "node",
    "batch_id",
    "transformation",
    "command",
    "container_image",
    "resource_type",
    "request_cores",
    "actual_cores",
    "request_memory_mb",
    "request_disk_mb",
    "request_walltime_s",
    "cpu_time_s",
    "max_rss_kb",
    "max_pss_kb",
    "transexitcode",
    "piloterrorcode",
    "piloterrordiag",
    "exeerrorcode",
    "exeerrordiag",
    "superrorcode",
    "superrordiag",
    "ddmerrorcode",
    "ddmerrordiag",
    "brokerageerrorcode",
    "brokerageerrordiag",
    "jobdispatchererrorcode",
    "jobdispatchererrordiag",
    "taskbuffererrorcode",
    "taskbuffererrordiag",
    "creationtime",
    "heartbeat_at",
    "statechangetime",
    "starttime",
    "endtime",
)
FILE_COLUMNS = ("id", "job_id", "lfn", "role", "dataset", "scope", "guid", "size", "checksum", "status")


def jobs_described(
    pandaids: Sequence[int],
) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """The rows of these jobs (with their task's max_attempts) and their files: two queries."""
    rows = {
        row["pandaid"]: row
        for row in Job.objects.filter(pandaid__in=list(pandaids)).values(
            *JOB_COLUMNS, max_attempts=F("task__max_attempts")
        )
    }
    files: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if rows:
        for f in File.objects.filter(job_id__in=list(rows)).order_by("id").values(*FILE_COLUMNS):
            files[f["job_id"]].append(f)
    return rows, files


def jobs_owned(pandaids: Sequence[int]) -> dict[int, tuple[int, int, str]]:
    """pandaid → (workflow id, owner id, jobstatus) of the jobs that exist: one query."""
    return {
        pandaid: (workflow_id, owner_id, status)
        for pandaid, workflow_id, owner_id, status in Job.objects.filter(
            pandaid__in=list(pandaids)
        ).values_list("pandaid", "workflow_id", "workflow__owner_id", "jobstatus")
    }


TASK_COLUMNS = (
    "jeditaskid",
    "workflow_id",
    "label",
    "name",
    "status",
    "username",
    "priority",
    "cores",
    "memory_mb",
    "walltime_s",
    "created_at",
    "modified_at",
    "ended_at",
    "workflow__name",
)


def tasks_with_counts(
    *, filters: Mapping[str, Any], since: dt.datetime | None, limit: int
) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """Tasks (newest first, at most `limit`) matching `filters` (ORM lookups on Task) and
    modified since `since`, each with its exact job counts: two queries."""
    qs = Task.objects.filter(**filters)
    if since is not None:
        qs = qs.filter(modified_at__gte=since)
    rows = list(qs.order_by("-jeditaskid").values(*TASK_COLUMNS)[:limit])
    counts = task_state_counts([row["jeditaskid"] for row in rows])
    return [(row, counts.get(row["jeditaskid"], {})) for row in rows]


def task_status_now(status: str, counts: Mapping[str, int]) -> str:
    """The task's JEDI status from its exact counts, as the rollup loop will write it."""
    return task_status_derive(status, dict(counts))


def task_job_ids(task_id: int) -> list[int]:
    return list(Job.objects.filter(task_id=task_id).order_by("pandaid").values_list("pandaid", flat=True))


def workflow_task_count(workflow_id: int) -> int:
    return Task.objects.filter(workflow_id=workflow_id).count()


def workflow_job_ids(workflow_id: int) -> dict[str, int]:
    """job name → pandaid of a workflow's jobs."""
    return dict(Job.objects.filter(workflow_id=workflow_id).values_list("name", "pandaid"))


def workflow_task_ids(workflow_id: int) -> list[int]:
    return list(
        Task.objects.filter(workflow_id=workflow_id)
        .order_by("jeditaskid")
        .values_list("jeditaskid", flat=True)
    )
