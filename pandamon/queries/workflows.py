"""Named reads of `/workflows/` and `/workflow/<id>/`: workflow pages with exact per-state counts
(the task counters), the task graph and slices of the job graph."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import F, Q

from campaigns.models import Group
from core.shared_cache import cached_or_computed_once
from dispatcher.models import ArchivedJob, ArchivedJobDependency, Job, JobDependency, Task, Workflow
from dispatcher.queries import task_state_counts
from pandamon.queries.common import progress

# A workflow's graph (its task edges, which jobs are final) is fixed at submission: kept a day
# after a read.
TASK_EDGES_CACHE_S = 24 * 3600


def workflows_page(q: Q, *, cursor: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """A page of workflows, newest first, with exact per-state counts and progress. Three queries."""
    qs = Workflow.objects.filter(q).select_related("owner")
    if cursor is not None:
        qs = qs.filter(id__lt=cursor)
    workflows = list(qs.order_by("-id")[: limit + 1])
    next_cursor = None
    if len(workflows) > limit:
        workflows = workflows[:limit]
        next_cursor = workflows[-1].pk
    task_rows = list(Task.objects.filter(workflow__in=workflows).values_list("jeditaskid", "workflow_id"))
    counts = task_state_counts([t for t, _ in task_rows])
    per_wf: dict[int, dict[str, int]] = {wf.pk: defaultdict(int) for wf in workflows}
    for task_id, wf_id in task_rows:
        for status, n in counts[task_id].items():
            per_wf[wf_id][status] += n
    rows = []
    for wf in workflows:
        c = dict(per_wf[wf.pk])
        rows.append({"workflow": wf, "counts": c, **progress(c)})
    return rows, next_cursor


def workflow_detail(workflow_id: int) -> Workflow | None:
    """The workflow with its owner and, when it is a campaign group's attempt, that attempt and its
    group (for the group's ETA and stall with their basis): one query."""
    return Workflow.objects.select_related("owner", "campaign_attempt__group").filter(pk=workflow_id).first()


def workflow_campaign_group(workflow: Workflow) -> Group | None:
    """The campaign group whose current attempt the workflow is, else None (no query: loaded by
    `workflow_detail`)."""
    from django.core.exceptions import ObjectDoesNotExist

    try:
        attempt = workflow.campaign_attempt
    except ObjectDoesNotExist:
        return None
    group = attempt.group
    return group if group.attempt == attempt.attempt else None


def workflow_tasks(workflow_id: int) -> tuple[list[Task], dict[int, dict[str, int]]]:
    tasks = list(Task.objects.filter(workflow_id=workflow_id).order_by("jeditaskid"))
    return tasks, task_state_counts([t.jeditaskid for t in tasks])


def workflow_task_edges(workflow: Workflow) -> list[tuple[int, int]]:
    """Task-level edges (parent task → child task), as stored at submission (no query).

    A workflow submitted before they were stored has them derived from its job edges; its graph is
    fixed at submission, so that result is cached after the first read (one query the first time,
    none after while it is cached; readers arriving while it is computed wait for it rather than
    run it again).
    """
    if workflow.task_edges is not None:
        return [(int(a), int(b)) for a, b in workflow.task_edges]
    workflow_id = workflow.pk
    key = f"pandamon:wf-task-edges:{workflow_id}:{workflow.created_at.timestamp()}"

    def edges() -> list[tuple[int, int]]:
        rows = (
            _models(workflow.archived_at is not None)[1]
            ._default_manager.filter(child__workflow_id=workflow_id)
            .exclude(parent__task_id=F("child__task_id"))
            .order_by()
            .values_list("parent__task_id", "child__task_id")
            .distinct()
        )
        return sorted((int(a), int(b)) for a, b in rows)

    return [(int(a), int(b)) for a, b in cached_or_computed_once(key, edges, TASK_EDGES_CACHE_S)]


def workflow_final_jobs(workflow: Workflow) -> list[dict[str, Any]]:
    """The workflow's final jobs (docs/user-guide/workflows.md#final-jobs) with their live state;
    no query for a workflow without any. Which jobs are final is fixed at submission: their ids are
    cached after the first read, then one query by primary key reads their states."""
    if not workflow.final_jobs:
        return []
    key = f"pandamon:wf-final-jobs:{workflow.pk}:{workflow.created_at.timestamp()}"
    jobs = _models(workflow.archived_at is not None)[0]._default_manager
    ids = cached_or_computed_once(
        key,
        lambda: sorted(jobs.filter(workflow_id=workflow.pk, is_final=True).values_list("pandaid", flat=True)),
        TASK_EDGES_CACHE_S,
    )
    return [
        dict(row)
        for row in jobs.filter(pk__in=ids)
        .order_by("pandaid")
        .values("pandaid", "name", "label", "task_id", "jobstatus", "attemptnr", "pending_parents")
    ]


def _models(
    archived: bool,
) -> tuple[type[Job] | type[ArchivedJob], type[JobDependency] | type[ArchivedJobDependency]]:
    """Where a workflow's jobs and edges are: the live tables, or the archive once it is archived
    (`Workflow.archived_at`)."""
    return (ArchivedJob, ArchivedJobDependency) if archived else (Job, JobDependency)


def workflow_job_slice(
    workflow_id: int, *, label: str | None, data_id: dict[str, str], limit: int, archived: bool = False
) -> tuple[list[dict[str, Any]], list[tuple[int, int]], bool]:
    """Jobs of one label or data-id slice of a workflow and the edges among them (two queries)."""
    job_model, edge_model = _models(archived)
    qs = job_model._default_manager.filter(workflow_id=workflow_id)
    if label:
        # Through the label's tasks, so the read uses job_task_status_idx, not the whole workflow.
        qs = qs.filter(
            task__in=Task.objects.filter(workflow_id=workflow_id, label=label).values("jeditaskid")
        )
    for key, value in data_id.items():
        qs = qs.filter(Q(**{f"data_id__{key}": value}) | Q(**{f"data_id__{key}": _maybe_int(value)}))
    jobs: list[dict[str, Any]] = [
        dict(j)
        for j in qs.order_by("pandaid").values("pandaid", "name", "label", "jobstatus", "is_final")[
            : limit + 1
        ]
    ]
    truncated = len(jobs) > limit
    jobs = jobs[:limit]
    ids = [j["pandaid"] for j in jobs]
    edges: list[tuple[int, int]] = []
    if ids:
        edges = list(
            edge_model._default_manager.filter(child_id__in=ids, parent_id__in=ids).values_list(
                "parent_id", "child_id"
            )
        )
    return jobs, edges, truncated


def _maybe_int(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value
