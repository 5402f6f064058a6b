from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from pandamon.queries import overview_queues, overview_state_totals, overview_workflows


def overview(request: HttpRequest) -> HttpResponse:
    rows = overview_workflows()
    totals = overview_state_totals(rows)
    if "json" in request.GET:
        return JsonResponse(
            {
                "jobs_by_state": totals,
                "workflows": [
                    {
                        "id": r["workflow"].pk,
                        "name": r["workflow"].name,
                        "status": r["workflow"].status,
                        "counts": r["counts"],
                    }
                    for r in rows
                ],
            }
        )
    return render(
        request, "pandamon/overview.html", {"rows": rows, "totals": totals, "queues": overview_queues()}
    )
