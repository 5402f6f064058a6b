"""`/sites/` and `/site/<name>/`."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse

from dispatcher.states import JobStatus
from pandamon import charts
from pandamon.filters import compile_selection
from pandamon.queries import sites as reads
from pandamon.views._common import monitor_view, params_of, respond


@monitor_view
def site_list(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(params, {}, time_column=None, default_hours=12)
    queues = reads.queues_with_sites()
    counts = reads.queue_state_counts(sel.since, sel.until)
    rows: list[dict[str, Any]] = []
    for qu in queues:
        c = counts.get(qu.name, {})
        finished, failed = c.get(JobStatus.FINISHED, 0), c.get(JobStatus.FAILED, 0)
        rows.append(
            {
                "queue": qu,
                "counts": charts.ordered_states(c),
                "total": sum(c.values()),
                "failure_pct": 100 * failed / (finished + failed) if finished + failed else None,
            }
        )
    context = {
        "sel": sel,
        "params": params,
        "rows": rows,
        "states": JobStatus.values,
        "locked": sel.locked_query(params),
    }
    return respond(
        request,
        "pandamon/sites.html",
        context,
        lambda: {
            "window": sel.window_label,
            "unknown_filters": sel.unknown,
            "queues": [
                {
                    "name": r["queue"].name,
                    "site": r["queue"].site.name,
                    "region": r["queue"].site.region,
                    "status": r["queue"].status,
                    "counts": r["counts"],
                    "failure_pct": r["failure_pct"],
                }
                for r in rows
            ],
        },
    )


@monitor_view
def site_detail(request: HttpRequest, name: str) -> HttpResponse:
    site = reads.site_detail(name)
    if site is None:
        raise Http404(f"no site {name}")
    params = params_of(request)
    sel = compile_selection(params, {}, time_column=None, default_hours=12)
    queues = list(site.queues.order_by("name"))
    stats = reads.site_job_stats([qu.name for qu in queues], sel.since, sel.until)
    workers = reads.site_workers_by_state(site)
    context = {
        "site": site,
        "sel": sel,
        "params": params,
        "queues": queues,
        "queue_stats": stats.queues,
        "nodes": stats.nodes,
        "workers": workers,
        "window_query": f"date_from={sel.since:%Y-%m-%dT%H:%M:%S}" if sel.since else "",
    }
    return respond(
        request,
        "pandamon/site.html",
        context,
        lambda: {
            "name": site.name,
            "region": site.region,
            "window": sel.window_label,
            "unknown_filters": sel.unknown,
            "queues": stats.queues,
            "worker_nodes": stats.nodes,
            "harvester_workers": workers,
        },
    )
