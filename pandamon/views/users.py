"""`/users/` and `/user/<name>/`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse

from pandamon import charts
from pandamon.filters import compile_selection
from pandamon.queries import common
from pandamon.queries import users as reads
from pandamon.views._common import monitor_view, params_of, respond


@monitor_view
def user_list(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(params, {}, time_column=None, default_hours=24 * 7)
    rows = reads.users_summary(sel.since, sel.until)
    context = {"sel": sel, "params": params, "rows": rows, "locked": sel.locked_query(params)}
    return respond(
        request,
        "pandamon/users.html",
        context,
        lambda: {"window": sel.window_label, "unknown_filters": sel.unknown, "users": rows},
    )


@monitor_view
def user_detail(request: HttpRequest, name: str) -> HttpResponse:
    params = params_of(request)
    sel = compile_selection(params, {}, time_column=None, default_hours=24 * 7)
    tasks, counts = reads.user_tasks(name, sel.since, until=sel.until)
    if not tasks and reads.user_last_activity(name) is None:
        raise Http404(f"no tasks of user {name}")
    total: dict[str, int] = {}
    for c in counts.values():
        for status, n in c.items():
            total[status] = total.get(status, 0) + n
    rows: list[dict[str, Any]] = [
        {"task": t, "counts": counts[t.jeditaskid], **common.progress(counts[t.jeditaskid])} for t in tasks
    ]
    context = {
        "name": name,
        "state_link": urlencode({"produsername": name, "days": 7}),
        "sel": sel,
        "params": params,
        "rows": rows,
        "total": charts.ordered_states(total),
        "progress": common.progress(total),
    }
    return respond(
        request,
        "pandamon/user.html",
        context,
        lambda: {
            "username": name,
            "window": sel.window_label,
            "unknown_filters": sel.unknown,
            "counts": total,
            "tasks": [
                {
                    "jeditaskid": r["task"].jeditaskid,
                    "name": r["task"].name,
                    "status": r["task"].status,
                    "counts": r["counts"],
                }
                for r in rows
            ],
        },
    )
