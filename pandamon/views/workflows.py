"""`/workflows/` and `/workflow/<id>/` with the DAG: task level, or a job-level slice; the
workflow's action buttons (pause, resume, retry, restart, cancel) call the workflow services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from dispatcher.access import workflow_get_for_user
from dispatcher.queries import tasks_core_use
from dispatcher.services import (
    WorkflowInvalid,
    workflow_cancel,
    workflow_pause,
    workflow_restart,
    workflow_resume,
    workflow_retry,
)
from dispatcher.states import WORKFLOW_FINAL, TaskStatus, WorkflowStatus
from pandamon import charts, dag_view
from pandamon.filters import WORKFLOW_FIELDS, FilterError, compile_selection, int_param
from pandamon.queries import common
from pandamon.queries import dag as dag_reads
from pandamon.queries import workflows as reads
from pandamon.views._common import bad_request, can_act, monitor_view, params_of, query_without, respond

SLICE_LIMIT = 5000
# Above this many jobs a job-level view draws one box per label (with counts) instead of every job.
JOB_NODE_CAP = 300
# Attempts drawn on the workflow timeline (the page says when there were more).
TIMELINE_LIMIT = 2000
# The monitor's workflow buttons → the services the REST API calls (pandamon writes nothing itself).
WORKFLOW_ACTIONS: dict[str, Callable[..., dict[str, int]]] = {
    "pause": workflow_pause,
    "resume": workflow_resume,
    "retry": workflow_retry,
    "restart": workflow_restart,
    "cancel": workflow_cancel,
}


@monitor_view
def workflow_list(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(params, WORKFLOW_FIELDS, time_column="modified_at", default_hours=None)
    limit = int_param(params, "display_limit", default=50, maximum=1000)
    cursor = int_param(params, "cursor", default=0, maximum=2**62) or None
    rows, next_cursor = reads.workflows_page(sel.q, cursor=cursor, limit=limit)
    base = query_without(params, "cursor")
    context = {
        "sel": sel,
        "params": params,
        "rows": rows,
        "base_query": base,
        "next_query": f"{base}&cursor={next_cursor}" if next_cursor else None,
        "locked": sel.locked_query(params),
    }
    return respond(
        request,
        "pandamon/workflows.html",
        context,
        lambda: {
            "window": sel.window_label,
            "filters": sel.applied,
            "unknown_filters": sel.unknown,
            "workflows": [
                {
                    "id": r["workflow"].pk,
                    "name": r["workflow"].name,
                    "owner": r["workflow"].owner.username,
                    "status": r["workflow"].status,
                    "counts": r["counts"],
                    "finished_pct": r["finished_pct"],
                    "failed_pct": r["failed_pct"],
                }
                for r in rows
            ],
            "next_cursor": next_cursor,
        },
        partial="workflow-results",
    )


@monitor_view
def workflow_detail(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = reads.workflow_detail(workflow_id)
    if workflow is None:
        raise Http404(f"no workflow {workflow_id}")
    params = params_of(request)
    tasks, counts = reads.workflow_tasks(workflow_id)
    total: dict[str, int] = {}
    for c in counts.values():
        for status, n in c.items():
            total[status] = total.get(status, 0) + n
    final_jobs = reads.workflow_final_jobs(workflow)
    label = params.get("label") or None
    data_id = data_id_of(params)
    cap = int_param(params, "cap", default=JOB_NODE_CAP, maximum=dag_view.MAX_JOB_BOXES)
    unknown = sorted(
        k for k in params if k not in {"json", "label", "cap", "data_id"} and not k.startswith("data_id.")
    )
    if label or data_id:
        jobs, edges, truncated = reads.workflow_job_slice(
            workflow_id,
            label=label,
            data_id=data_id,
            limit=SLICE_LIMIT,
            archived=workflow.archived_at is not None,
        )
        finals = {j["pandaid"] for j in jobs if j["is_final"]}
        dashed = dag_view.final_edges([j["pandaid"] for j in jobs], edges, finals)
        graph = dag_view.job_graph(
            jobs,
            edges,
            dashed,
            url=lambda pk: reverse("pandamon:job", args=[pk]),
            cap=cap,
            label_url=lambda name: f"/workflow/{workflow_id}/?label={quote(name)}",
        )
        level = "job"
    else:
        edges = reads.workflow_task_edges(workflow)
        final_tasks = {j["task_id"] for j in final_jobs}
        task_ids = [t.jeditaskid for t in tasks]
        dashed = dag_view.final_edges(task_ids, edges, final_tasks)
        graph = dag_view.task_graph(
            [{"id": t.jeditaskid, "label": t.label, "final": t.jeditaskid in final_tasks} for t in tasks],
            counts,
            edges,
            dashed,
            url=lambda pk: reverse("pandamon:task", args=[pk]),
        )
        truncated = False
        level = "task"
    nodes = graph["nodes"]
    attempts, attempts_truncated = dag_reads.workflow_attempts(
        workflow_id,
        [t.jeditaskid for t in tasks],
        limit=TIMELINE_LIMIT,
        archived=workflow.archived_at is not None,
    )
    timeline = dag_view.timeline(
        attempts, labels=[t.label for t in tasks], truncated=attempts_truncated, cap=TIMELINE_LIMIT
    )
    final = workflow.status in WORKFLOW_FINAL
    cost = tasks_core_use([t.jeditaskid for t in tasks], archived=workflow.archived_at is not None)
    rows: list[dict[str, Any]] = [
        {
            "task": t,
            "counts": counts[t.jeditaskid],
            "wasted_core_s": cost[t.jeditaskid].failed_core_s if t.jeditaskid in cost else 0,
            **common.progress(counts[t.jeditaskid]),
        }
        for t in tasks
    ]
    context = {
        "workflow": workflow,
        "wasted_core_s": sum(r["wasted_core_s"] for r in rows),
        "paused_tasks": [t for t in tasks if t.status == "paused"],
        "rows": rows,
        "total": charts.ordered_states(total),
        "progress": common.progress(total),
        "graph": graph,
        "timeline": timeline,
        "cap": cap,
        "level": level,
        "label": label,
        "data_id": data_id,
        "truncated": truncated,
        "slice_limit": SLICE_LIMIT,
        "max_boxes": dag_view.MAX_JOB_BOXES,
        "unknown": unknown,
        "final": final,
        "state_link": f"workflow={workflow.pk}",
        "labels": sorted({t.label for t in tasks}),
        "final_jobs": final_jobs,
        "campaign_group": reads.workflow_campaign_group(workflow),
        "query": query_without(params),
        **_actions_offered(request, workflow.owner.username, workflow.status, tasks, total),
    }
    return respond(
        request,
        "pandamon/workflow.html",
        context,
        lambda: {
            "id": workflow.pk,
            "name": workflow.name,
            "status": workflow.status,
            "counts": total,
            "tasks": [
                {
                    "jeditaskid": t.jeditaskid,
                    "label": t.label,
                    "status": t.status,
                    "pause_reason": t.pause_reason,
                    "counts": counts[t.jeditaskid],
                    "wasted_core_seconds": cost[t.jeditaskid].failed_core_s if t.jeditaskid in cost else 0,
                }
                for t in tasks
            ],
            "level": level,
            "collapsed": graph["kind"] == "label",
            "nodes": nodes,
            "edges": graph["edges"],
            "final_edges": graph["final_edges"],
            "final_jobs": [
                {
                    "pandaid": j["pandaid"],
                    "name": j["name"],
                    "label": j["label"],
                    "jeditaskid": j["task_id"],
                    "jobstatus": j["jobstatus"],
                    "attemptnr": j["attemptnr"],
                    "waiting": j["jobstatus"] == "defined" and j["pending_parents"] > 0,
                }
                for j in final_jobs
            ],
            "truncated": truncated,
            "timeline": timeline,
            "unknown_filters": unknown,
        },
        partial="workflow-body",
    )


def data_id_of(params: dict[str, str]) -> dict[str, str]:
    """A data-id slice from `data_id.KEY=VALUE` parameters or `data_id=KEY:VALUE[,KEY:VALUE]`."""
    data_id = {k[len("data_id.") :]: v for k, v in params.items() if k.startswith("data_id.")}
    for part in filter(None, (params.get("data_id") or "").split(",")):
        key, sep, value = part.partition(":")
        if not sep:
            raise FilterError(f"data_id={part}: expected KEY:VALUE")
        data_id[key.strip()] = value.strip()
    for key in data_id:
        if not key.isidentifier():
            raise FilterError(f"data_id.{key}: not a data-id key")
    return data_id


def _actions_offered(
    request: HttpRequest, owner: str, status: str, tasks: Any, total: dict[str, int]
) -> dict[str, Any]:
    """`actions`: the buttons that can do something now, for a user allowed to press them;
    `act_hint`: there would be some, but this user may not press them (the page says how to)."""
    possible = _actions_possible(status, tasks, total)
    allowed = can_act(request, owner)
    return {"actions": possible if allowed else [], "act_hint": bool(possible) and not allowed}


def _actions_possible(status: str, tasks: Any, total: dict[str, int]) -> list[str]:
    paused = status == WorkflowStatus.PAUSED or any(t.status == TaskStatus.PAUSED for t in tasks)
    offered = []
    if status not in WORKFLOW_FINAL and status != WorkflowStatus.PAUSED:
        offered.append("pause")
    if paused:
        offered.append("resume")
    if total.get("failed"):
        offered.append("retry")
    if total.get("failed") or total.get("cancelled") or total.get("pruned"):
        offered.append("restart")
    if status not in WORKFLOW_FINAL:
        offered.append("cancel")
    return offered


@require_POST
def workflow_action(request: HttpRequest, workflow_id: int, verb: str) -> HttpResponse:
    """One workflow button: the access function decides, the workflow service acts."""
    action = WORKFLOW_ACTIONS.get(verb)
    if action is None:
        raise Http404(f"no workflow action {verb!r}")
    if not request.user.is_authenticated:
        return HttpResponse("log in to act on workflows", status=401)
    try:
        workflow_get_for_user(request.user, workflow_id, write=True)
    except PermissionDenied:
        return HttpResponse("only the workflow's owner or an operator may act on it", status=403)
    try:
        result = action(workflow_id=workflow_id, actor=request.user)
    except WorkflowInvalid as exc:
        return bad_request(request, exc.message)
    done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items())
    messages.success(request, f"workflow {workflow_id}: {verb}: {done}")
    return redirect("pandamon:workflow", workflow_id=workflow_id)
