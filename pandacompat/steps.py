"""Workflows sent in steps: ctrl_bps_panda sends a workflow larger than its `maxRequestLength` as
steps (`_is_workflow_step`), each carrying some tasks' dependency maps and answered `0`, then the
main workflow (`with_steps`), whose works name their maps as
`IDDS_WORKFLOW_ADDITIONAL_STORAGE/<task>`.

1. A step's maps are stored per submitting user and task name (`WorkflowStep`); a task name the
   user stored before is replaced (a resubmission after a failed main workflow).
2. Caps: a user's stored steps hold at most MAX_DAG_JOBS jobs altogether (a main workflow could
   not hold more), and steps expire after AILURO_PANDACOMPAT["STEP_TTL_S"]: every store deletes
   the expired ones, and a main workflow never reads them.
3. The main workflow reads only its own user's steps, and they are deleted in the transaction
   that submits it; a main workflow that fails leaves them for a retry until they expire.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from pandacompat.decoding import IddsDependency, IddsJob, IddsWorkflow
from pandacompat.models import WorkflowStep


class StepRefused(Exception):
    """A step that cannot be stored (over the user's cap); `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _expiry(now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(seconds=int(settings.AILURO_PANDACOMPAT["STEP_TTL_S"]))


def _jobs_plain(jobs: Iterable[IddsJob]) -> list[Any]:
    return [[job.name, [[dep.task, dep.inputname] for dep in job.dependencies]] for job in jobs]


def _jobs_typed(plain: list[Any]) -> tuple[IddsJob, ...]:
    return tuple(
        IddsJob(name=name, dependencies=tuple(IddsDependency(task=t, inputname=i) for t, i in deps))
        for name, deps in plain
    )


@transaction.atomic
def workflow_step_store(*, owner: Any, workflow: IddsWorkflow) -> int:
    """Store a step's dependency maps for `owner`; returns the jobs stored."""
    now = timezone.now()
    WorkflowStep.objects.filter(created__lt=_expiry(now)).delete()
    incoming = sum(len(jobs) for jobs in workflow.step_maps.values())
    held = (
        WorkflowStep.objects.filter(owner=owner)
        .exclude(task_name__in=list(workflow.step_maps))
        .aggregate(n=Sum("job_count"))["n"]
        or 0
    )
    cap = int(settings.AILURO["MAX_DAG_JOBS"])
    if held + incoming > cap:
        raise StepRefused(
            f"this step would make {held + incoming} jobs in your stored steps; at most {cap} "
            "(MAX_DAG_JOBS) wait for their main workflow"
        )
    for task_name, jobs in workflow.step_maps.items():
        WorkflowStep.objects.update_or_create(
            owner=owner,
            task_name=task_name,
            defaults={
                "workflow_name": workflow.name,
                "jobs": _jobs_plain(jobs),
                "job_count": len(jobs),
                "created": now,
            },
        )
    return incoming


def workflow_steps_read(*, owner: Any, task_names: Iterable[str]) -> dict[str, tuple[IddsJob, ...]]:
    """The unexpired stored maps of `owner` for `task_names`, locked until the transaction ends
    (call inside the transaction that submits and then deletes them)."""
    rows = WorkflowStep.objects.select_for_update().filter(
        owner=owner, task_name__in=list(task_names), created__gte=_expiry(timezone.now())
    )
    return {row.task_name: _jobs_typed(row.jobs) for row in rows}


def workflow_steps_delete(*, owner: Any, task_names: Mapping[str, Any] | Iterable[str]) -> int:
    deleted, _ = WorkflowStep.objects.filter(owner=owner, task_name__in=list(task_names)).delete()
    return deleted
