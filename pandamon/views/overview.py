"""`/`: jobs by state, running workflows with progress bars, site health, latest failures."""

from __future__ import annotations

from django.db.models import Q
from django.http import HttpRequest, HttpResponse

from pandamon import charts
from pandamon.filters import window
from pandamon.queries.sites import dash_matrix
from pandamon.queries.users import latest_failures
from pandamon.queries.workflows import workflows_page
from pandamon.views._common import monitor_view, params_of, respond


@monitor_view
def overview(request: HttpRequest) -> HttpResponse:
    since, until, label = window(params_of(request), default_hours=12)
    workflows, _ = workflows_page(Q(), cursor=None, limit=15)
    matrix = dash_matrix(since, until)
    totals: dict[str, int] = {}
    for region in matrix["regions"]:
        for status, n in region["counts"].items():
            totals[status] = totals.get(status, 0) + n
    failures = latest_failures()
    context = {
        "workflows": workflows,
        "totals": charts.ordered_states(totals),
        "queues": matrix["queues"],
        "failures": failures,
        "window_label": label,
    }
    return respond(
        request,
        "pandamon/overview.html",
        context,
        lambda: {
            "window": label,
            "jobs_by_state": totals,
            "workflows": [
                {
                    "id": r["workflow"].pk,
                    "name": r["workflow"].name,
                    "status": r["workflow"].status,
                    "counts": r["counts"],
                }
                for r in workflows
            ],
            "queues": matrix["queues"],
            "latest_failures": failures,
        },
        partial="overview-body",
    )
