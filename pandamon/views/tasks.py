"""`/tasks/` and `/task/<jeditaskid>/`."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse

from ailuro import units
from dispatcher.queries import task_state_counts
from dispatcher.states import TASK_FINAL
from pandamon import charts
from pandamon.filters import TASK_FIELDS, compile_selection, int_param
from pandamon.queries import common
from pandamon.queries import tasks as reads
from pandamon.views._common import monitor_view, params_of, query_without, respond


@monitor_view
def task_list(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(
        params,
        TASK_FIELDS,
        time_column="modified_at",
        default_hours=None,
        unwindowed_by=frozenset({"jeditaskid", "workflow"}),
    )
    limit = int_param(params, "display_limit", default=100, maximum=2000)
    cursor = int_param(params, "cursor", default=0, maximum=2**62) or None
    tasks, counts, next_cursor = reads.tasks_page(sel.q, cursor=cursor, limit=limit)
    facets = reads.task_facets(sel.q)
    rows: list[dict[str, Any]] = [
        {"task": t, "counts": counts[t.jeditaskid], **common.progress(counts[t.jeditaskid])} for t in tasks
    ]
    base = query_without(params, "cursor")
    context = {
        "sel": sel,
        "params": params,
        "rows": rows,
        "facets": facets,
        "total": sum(n for _, n in facets["status"]),
        "base_query": base,
        "next_query": f"{base}&cursor={next_cursor}" if next_cursor else None,
        "locked": sel.locked_query(params),
    }
    return respond(
        request,
        "pandamon/tasks.html",
        context,
        lambda: {
            "window": sel.window_label,
            "filters": sel.applied,
            "unknown_filters": sel.unknown,
            "facets": facets,
            "tasks": [
                {
                    "jeditaskid": r["task"].jeditaskid,
                    "name": r["task"].name,
                    "status": r["task"].status,
                    "workflow": r["task"].workflow_id,
                    "username": r["task"].username,
                    "counts": r["counts"],
                }
                for r in rows
            ],
            "next_cursor": next_cursor,
        },
        partial="task-results",
    )


@monitor_view
def task_detail(request: HttpRequest, jeditaskid: int) -> HttpResponse:
    task = reads.task_detail(jeditaskid)
    if task is None:
        raise Http404(f"no task {jeditaskid}")
    counts = task_state_counts([jeditaskid])[jeditaskid]
    top_errors = reads.task_top_errors(jeditaskid, archived=task.workflow.archived_at is not None)
    profile = reads.task_job_profile(task)
    hist, slowest = profile.histograms, profile.slowest
    cost = reads.task_cost(task)
    context = {
        "task": task,
        "cost": cost,
        "final": task.status in TASK_FINAL,
        "state_link": f"jeditaskid={task.jeditaskid}",
        "counts": charts.ordered_states(counts),
        "progress": common.progress(counts),
        "top_errors": top_errors,
        "slowest": slowest,
        "wall_chart": charts.histogram(
            hist["walltime_min"], title="Walltime", x_title="minutes", colour="#5b8def"
        ),
        "rss_chart": charts.histogram(
            hist["max_rss_mb"], title="Peak RSS (finished and failed jobs)", x_title="MB", colour="#7c6cf0"
        ),
    }
    return respond(
        request,
        "pandamon/task.html",
        context,
        lambda: {
            "jeditaskid": task.jeditaskid,
            "name": task.name,
            "status": task.status,
            "workflow": task.workflow_id,
            "included_sites": task.included_sites,
            "excluded_sites": task.excluded_sites,
            "counts": counts,
            "progress": common.progress(counts),
            "top_errors": top_errors,
            "histograms": hist,
            "slowest_jobs": [{**j, "max_rss_mb": units.mb_from_kb(j["max_rss_kb"])} for j in slowest],
            "pause_reason": task.pause_reason,
            "paused_at": task.paused_at,
            **cost.as_json(),
        },
        partial="task-body",
    )
