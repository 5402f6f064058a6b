"""Named reads for the monitor pages."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from dispatcher.models import Queue, Task, Workflow
from dispatcher.queries import task_state_counts
from dispatcher.states import JobStatus


def overview_workflows(limit: int = 20) -> list[dict[str, Any]]:
    """The newest workflows with exact per-state counts (from the task counters)."""
    workflows = list(Workflow.objects.select_related("owner").order_by("-id")[:limit])
    task_rows = list(Task.objects.filter(workflow__in=workflows).values_list("jeditaskid", "workflow_id"))
    counts = task_state_counts([task_id for task_id, _ in task_rows])
    per_workflow: dict[int, dict[str, int]] = {wf.pk: {} for wf in workflows}
    for task_id, workflow_id in task_rows:
        for status, n in counts[task_id].items():
            per_workflow[workflow_id][status] = per_workflow[workflow_id].get(status, 0) + n
    result = []
    for wf in workflows:
        c = per_workflow[wf.pk]
        total = sum(c.values())
        result.append(
            {
                "workflow": wf,
                "counts": c,
                "total": total,
                "finished_pct": 100 * c.get(JobStatus.FINISHED, 0) / total if total else 0,
                "failed_pct": 100 * (c.get(JobStatus.FAILED, 0) + c.get(JobStatus.PRUNED, 0)) / total
                if total
                else 0,
            }
        )
    return result


def overview_state_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    totals = dict.fromkeys(JobStatus.values, 0)
    for row in rows:
        for status, n in row["counts"].items():
            totals[status] += n
    return totals


def overview_queues() -> QuerySet[Queue]:
    return Queue.objects.select_related("site").order_by("site__region", "site__name", "name")
