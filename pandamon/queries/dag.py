"""Named reads of the DAG views: the neighbourhood of a job across labels, and the attempts a
workflow's timeline draws. Bounded: every read stops at a cap given by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from dispatcher.models import ArchivedJob, ArchivedJobAttempt, Job, JobAttempt, JobDependency

JOB_FIELDS = ("pandaid", "name", "label", "jobstatus", "is_final", "task_id", "workflow_id")


def job_neighbourhood(
    pandaid: int, *, depth: int, limit: int
) -> tuple[list[dict[str, Any]], list[tuple[int, int]], bool]:
    """The job, its ancestors and descendants up to `depth` edges away (across labels), and the
    edges among them. At most `limit` jobs: the walk stops at the level that would exceed it and
    says so (`truncated`). One query per level and direction, then two for the jobs and edges."""
    seen = {pandaid}
    truncated = False
    for column, other in (("child_id", "parent_id"), ("parent_id", "child_id")):
        frontier = {pandaid}
        for _ in range(depth):
            if not frontier:
                break
            step = set(
                JobDependency.objects.filter(**{f"{column}__in": frontier}).values_list(other, flat=True)
            )
            fresh = step - seen
            if len(seen) + len(fresh) > limit:
                fresh = set(sorted(fresh)[: max(0, limit - len(seen))])
                truncated = True
            seen |= fresh
            frontier = fresh
            if truncated:
                break
    jobs = [dict(j) for j in Job.objects.filter(pk__in=seen).order_by("pandaid").values(*JOB_FIELDS)]
    ids = [j["pandaid"] for j in jobs]
    edges = sorted(
        JobDependency.objects.filter(child_id__in=ids, parent_id__in=ids).values_list("parent_id", "child_id")
    )
    return jobs, [(int(a), int(b)) for a, b in edges], truncated


def jobs_with_children(ids: list[int]) -> set[int]:
    """Which of these jobs are a parent of some job (the others are sinks of the workflow)."""
    if not ids:
        return set()
    return set(JobDependency.objects.filter(parent_id__in=ids).values_list("parent_id", flat=True).distinct())


def final_jobs_of(workflow_id: int) -> list[dict[str, Any]]:
    return [
        dict(j)
        for j in Job.objects.filter(workflow_id=workflow_id, is_final=True)
        .order_by("pandaid")
        .values(*JOB_FIELDS)
    ]


def workflow_attempts(
    workflow_id: int, task_ids: Sequence[int], *, limit: int, archived: bool = False
) -> tuple[list[dict[str, Any]], bool]:
    """Every attempt of the workflow's jobs that has run or is running, oldest first: the recorded
    ones (JobAttempt rows, ended, found by the workflow's `task_ids` through the attempts' task
    index: a join on the jobs or the tasks would hash every attempt of the table) and each job's
    current attempt once it has started and has no row yet. Each is {pandaid, attemptnr, label,
    state, start, end}, `end` None while the attempt runs; at most `limit` of each kind are read
    and at most `limit` returned (`truncated` says when there were more). An archived workflow's
    are read from the archive tables."""
    now = timezone.now()
    attempt_model = ArchivedJobAttempt if archived else JobAttempt
    job_model = ArchivedJob if archived else Job
    rows = list(
        attempt_model._default_manager.filter(task_id__in=list(task_ids))
        .order_by("endtime", "job_id", "attemptnr")
        .values(
            "job_id",
            "attemptnr",
            "jobstatus",
            "dispatched_at",
            "starttime",
            "endtime",
            "walltime_s",
            "job__label",
        )[: limit + 1]
    )
    recorded = {(r["job_id"], r["attemptnr"]) for r in rows}
    attempts: list[dict[str, Any]] = []
    for r in rows:
        end: datetime = r["endtime"]
        start = r["starttime"] or r["dispatched_at"]
        if start is None:
            start = end - timedelta(seconds=r["walltime_s"] or 0)
        attempts.append(
            {
                "pandaid": r["job_id"],
                "attemptnr": r["attemptnr"],
                "label": r["job__label"],
                "state": r["jobstatus"],
                "start": start,
                "end": end,
            }
        )
    current = (
        job_model._default_manager.filter(workflow_id=workflow_id)
        .filter(Q(starttime__isnull=False) | Q(endtime__isnull=False))
        .order_by("pandaid")
        .values("pandaid", "attemptnr", "label", "jobstatus", "dispatched_at", "starttime", "endtime")[
            : limit + 1
        ]
    )
    truncated = len(rows) > limit
    for j in current:
        if (j["pandaid"], j["attemptnr"]) in recorded:
            continue
        start = j["starttime"] or j["dispatched_at"] or j["endtime"] or now
        attempts.append(
            {
                "pandaid": j["pandaid"],
                "attemptnr": j["attemptnr"],
                "label": j["label"],
                "state": j["jobstatus"],
                "start": start,
                "end": j["endtime"],  # None while it runs
            }
        )
    attempts.sort(key=lambda a: (a["start"], a["pandaid"], a["attemptnr"]))
    if len(attempts) > limit or len(current) > limit:
        truncated = True
    return attempts[:limit], truncated
