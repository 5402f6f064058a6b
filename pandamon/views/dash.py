"""`/dash/`: the shifter's region → site → queue × job-state matrix, under the loop strip."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from dispatcher.states import JobStatus
from pandamon.filters import compile_selection
from pandamon.queries import sites as reads
from pandamon.queries.loops import loop_strip
from pandamon.views._common import monitor_view, params_of, respond


@monitor_view
def dashboard(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(params, {}, time_column=None, default_hours=12)
    matrix = reads.dash_matrix(sel.since, sel.until)
    loops = loop_strip()
    context = {
        "loops": loops,
        "sel": sel,
        "params": params,
        "matrix": matrix,
        "states": JobStatus.values,
        "locked": sel.locked_query(params),
        "window_query": f"date_from={sel.since:%Y-%m-%dT%H:%M:%S}" if sel.since else "",
    }
    return respond(
        request,
        "pandamon/dash.html",
        context,
        lambda: {"window": sel.window_label, "unknown_filters": sel.unknown, **matrix, "loops": loops},
        partial="dash-body",
    )
