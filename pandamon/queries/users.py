"""Named reads of the overview (`/`) and of `/users/` and `/user/<name>/`: latest failures, users
with their tasks and exact job counts (from the task counters)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Max
from django.db.models.functions import Coalesce

from dispatcher.models import ArchivedJob, Job, Task
from dispatcher.queries import archive_horizon, task_state_counts, users_state_counts
from dispatcher.states import JobStatus
from pandamon.queries.common import progress

_FAILURE_FIELDS = (
    "pandaid",
    "name",
    "queue_id",
    "task_id",
    "statechangetime",
    "piloterrorcode",
    "piloterrordiag",
    "exeerrorcode",
    "exeerrordiag",
    "transexitcode",
)


def latest_failures(limit: int = 10) -> list[dict[str, Any]]:
    """The `limit` latest failed jobs: the live ones, and the archived ones too when the live table
    has fewer or the oldest of them is not newer than the archive's horizon."""

    def latest(model: type[Job] | type[ArchivedJob]) -> list[dict[str, Any]]:
        failed = model._default_manager.filter(jobstatus=JobStatus.FAILED, statechangetime__isnull=False)
        return [
            dict(row)
            for row in failed.order_by("-statechangetime", "-pandaid").values(*_FAILURE_FIELDS)[:limit]
        ]

    rows = latest(Job)
    horizon = archive_horizon()
    if horizon is None or (len(rows) >= limit and rows[-1]["statechangetime"] > horizon):
        return rows
    rows += latest(ArchivedJob)
    rows.sort(key=lambda r: (r["statechangetime"], r["pandaid"]), reverse=True)
    return rows[:limit]


def users_summary(since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Users with tasks modified in the window, with exact job counts from the task counters."""
    qs = Task.objects.all()
    if since is not None:
        qs = qs.filter(modified_at__gte=since)
    if until is not None:
        qs = qs.filter(modified_at__lt=until)
    rows: list[dict[str, Any]] = [
        {"username": username, "tasks": tasks, "counts": counts, **progress(counts)}
        for username, (tasks, counts) in users_state_counts(qs).items()
    ]
    rows.sort(key=lambda r: (-r["total"], r["username"]))
    return rows


def user_tasks(
    username: str, since: datetime | None, limit: int = 200, *, until: datetime | None = None
) -> tuple[list[Task], dict[int, dict[str, int]]]:
    """The user's tasks modified in the window, newest first, with exact job counts."""
    qs = Task.objects.filter(username=username).select_related("workflow")
    if since is not None:
        qs = qs.filter(modified_at__gte=since)
    if until is not None:
        qs = qs.filter(modified_at__lt=until)
    tasks = list(qs.order_by("-jeditaskid")[:limit])
    return tasks, task_state_counts([t.jeditaskid for t in tasks])


def user_last_activity(username: str) -> datetime | None:
    found: datetime | None = Task.objects.filter(username=username).aggregate(
        m=Max(Coalesce("modified_at", "created_at"))
    )["m"]
    return found
