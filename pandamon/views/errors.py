"""`/errors/`: failed attempts by family:code → message template → sample jobs, over time, by
site, task and user."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from dispatcher.queries import archive_reached
from pandamon import charts
from pandamon.errortext import FAMILY_ADVICE
from pandamon.filters import ERROR_FIELDS, compile_selection
from pandamon.queries import common
from pandamon.queries import errors as reads
from pandamon.views._common import monitor_view, params_of, query_without, respond


@monitor_view
def error_summary(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(
        params, ERROR_FIELDS, time_column="endtime", default_hours=12, unwindowed_by=frozenset({"jeditaskid"})
    )
    bins = common.time_bin(sel.since, sel.until, timezone.now())
    unit = bins.unit
    rollup = reads.error_rollup_window(sel.since, sel.until, sel.applied)
    summary = reads.errors_summary(
        sel.q, unit=unit, rollup=rollup, archive=rollup is None and archive_reached(sel.since)
    )
    families: dict[str, int] = {}
    for g in summary.groups:
        families[g["family"]] = families.get(g["family"], 0) + g["count"]
    context = {
        "sel": sel,
        "params": params,
        "summary": summary,
        "families": sorted(families.items(), key=lambda kv: -kv[1]),
        "advice": FAMILY_ADVICE,
        "base_query": query_without(params),
        "locked": sel.locked_query(params),
        "chart": charts.stacked_over_time(
            summary.over_time,
            title=f"Failed attempts per {bins.label} (UTC) by family:code",
            unit=unit,
            bin_hours=bins.hours,
        ),
    }
    return respond(
        request,
        "pandamon/errors.html",
        context,
        lambda: {
            "window": sel.window_label,
            "filters": sel.applied,
            "unknown_filters": sel.unknown,
            "failed_attempts": summary.total_attempts,
            "errors": summary.groups,
            "by_site": summary.by_site,
            "by_task": summary.by_task,
            "by_user": summary.by_user,
            # Wasted core-hours: walltime × cores of the failed attempts (core-seconds, exact sums).
            "core_seconds": summary.total_core_s,
            "core_hours": round(summary.total_core_s / 3600, 3),
            "core_seconds_by_site": [[v, summary.core_by_site.get(v, 0)] for v, _ in summary.by_site],
            "core_seconds_by_task": [[v, summary.core_by_task.get(v, 0)] for v, _ in summary.by_task],
            "core_seconds_by_user": [[v, summary.core_by_user.get(v, 0)] for v, _ in summary.by_user],
            "by_workflow": [list(r) for r in summary.by_workflow],
            "over_time": summary.over_time,  # by `over_time_unit` (UTC); the chart merges `chart_bin_hours`
            "over_time_unit": unit,
            "chart_bin_hours": bins.hours,
        },
        partial="error-results",
    )
