"""Task and workflow states from their jobs' exact counts: the writes of the `rollup` loop
(`dispatcher.loops.rollup_one_batch`, docs/architecture.md#change-feed-and-rollups).

The derivation itself is pure (`dispatcher.states.task_status_derive` / `workflow_status_derive`);
here the candidates are chosen and a changed status is written with a conditional UPDATE on the
old value, so a concurrent rollup or an operator's action wins cleanly.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.db.models import Q

from dispatcher.models import Task, Workflow
from dispatcher.queries import task_state_counts
from dispatcher.services.final_jobs import final_jobs_release
from dispatcher.states import (
    JOB_NON_FINAL,
    TASK_FINAL,
    WORKFLOW_FINAL,
    TaskStatus,
    WorkflowStatus,
    task_status_derive,
    workflow_status_derive,
)


def statuses_rollup(*, limit: int, now: dt.datetime) -> int:
    """Derive the states of up to `limit` tasks and of their workflows; returns status changes.

    1. Candidate tasks: every unfinished task, plus finished ones that have unfinished jobs again (a
       restart), least recently rolled-up first.
    2. Each task's status from exact counts (`task_state_counts`); unchanged tasks move to the back
       of the round robin of step 1.
    3. The same for the candidates' workflows, from the sum of all their tasks' counts.
    Before that, the final jobs of the candidates' workflows are released where nothing else is
    left to run (`final_jobs_release`: its safety net).
    """
    reopened = Task.objects.filter(
        status__in=TASK_FINAL, counts__jobstatus__in=JOB_NON_FINAL, counts__count__gt=0
    ).values("jeditaskid")
    candidates = list(
        Task.objects.filter(Q(status__in=[s for s in TaskStatus if s not in TASK_FINAL]) | Q(pk__in=reopened))
        .order_by("modified_at", "jeditaskid")
        .values_list("jeditaskid", "status", "workflow_id")[:limit]
    )
    if not candidates:
        return 0
    workflow_ids = {workflow_id for _, _, workflow_id in candidates}
    # The safety net of the final jobs' release (two last jobs ending at once): a workflow with a
    # waiting final job has an unfinished task, so it is a candidate.
    final_jobs_release(
        Workflow.objects.filter(pk__in=workflow_ids, final_jobs__gt=0).values_list("pk", flat=True)
    )
    changed = _tasks_rollup(candidates, now)
    return changed + _workflows_rollup(workflow_ids, now)


def _tasks_rollup(candidates: list[tuple[int, str, int]], now: dt.datetime) -> int:
    counts = task_state_counts([task_id for task_id, _, _ in candidates])
    unchanged: list[int] = []
    changed = 0
    for task_id, current, _ in candidates:
        new = task_status_derive(current, counts[task_id])
        if new == current:
            unchanged.append(task_id)
        else:
            changed += Task.objects.filter(pk=task_id, status=current).update(
                status=new, modified_at=now, ended_at=now if new in TASK_FINAL else None
            )
    if unchanged:
        Task.objects.filter(pk__in=unchanged).update(modified_at=now)
    return changed


def _workflows_rollup(workflow_ids: set[int], now: dt.datetime) -> int:
    workflow_tasks: dict[int, list[int]] = defaultdict(list)
    for task_id, workflow_id in Task.objects.filter(workflow_id__in=workflow_ids).values_list(
        "jeditaskid", "workflow_id"
    ):
        workflow_tasks[workflow_id].append(task_id)
    all_counts = task_state_counts([t for ids in workflow_tasks.values() for t in ids])
    per_workflow: dict[int, dict[str, int]] = {}
    for workflow_id, task_ids in workflow_tasks.items():
        summed: dict[str, int] = defaultdict(int)
        for task_id in task_ids:
            for status, n in all_counts[task_id].items():
                summed[status] += n
        per_workflow[workflow_id] = dict(summed)
    changed = 0
    for workflow_id, current in Workflow.objects.filter(pk__in=workflow_ids).values_list("pk", "status"):
        if current == WorkflowStatus.CANCELLED:
            continue  # a cancel is final even while its jobs are still being cancelled
        new = workflow_status_derive(current, per_workflow.get(workflow_id, {}))
        if new != current:
            changed += Workflow.objects.filter(pk=workflow_id, status=current).update(
                status=new, modified_at=now, ended_at=now if new in WORKFLOW_FINAL else None
            )
    return changed
