"""BigPanDA's link forms, redirected to the ailuro page that shows the same thing.

Operators' bookmarks, wiki pages and scripts carry BigPanDA URLs (`/job?pandaid=…`,
`/dash/region/`, `/idds/daggraph/?idds_request_id=…`). Each form below answers a 302 to its ailuro
page with the rest of the query string kept, `json` included, so `?json` scripts that follow
redirects keep working. A form whose id is not a positive integer is a 400 naming the parameter.
Forms with no ailuro counterpart (file browser listings of Rucio logs, event-service dashboards)
are not listed and stay 404.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from pandamon.views._common import bad_request

# idds_request_id (the monitor's), requestid and request_id (iDDS clients): the workflow id.
_REQUEST_ID_PARAMS = ("idds_request_id", "requestid", "request_id")


def _rest(request: HttpRequest, drop: Iterable[str] = ()) -> str:
    """The query string without `drop`, bare flags such as `json` kept bare."""
    dropped = set(drop)
    parts = []
    for key, values in request.GET.lists():
        if key in dropped:
            continue
        for value in values:
            parts.append(quote(key, safe="") if value == "" else urlencode({key: value}))
    return "&".join(parts)


def _to(path: str, request: HttpRequest, drop: Iterable[str] = ()) -> HttpResponse:
    rest = _rest(request, drop)
    return HttpResponseRedirect(f"{path}?{rest}" if rest else path)


def _id(request: HttpRequest, names: Iterable[str]) -> tuple[str, int | None] | HttpResponse:
    """(parameter, id) of the first of `names` present; (`""`, None) when none is; a 400 reply
    when the value is not a positive integer."""
    for name in names:
        raw = request.GET.get(name)
        if raw is None:
            continue
        if not raw.isdigit() or int(raw) < 1 or len(raw) > 19:
            return bad_request(request, f"{name} must be a positive integer, got {raw[:40]!r}")
        return name, int(raw)
    return "", None


def job(request: HttpRequest) -> HttpResponse:
    """`/job?pandaid=N` → `/job/N/`; `/job?batchid=…` or `?jobname=…` → the job list so filtered."""
    found = _id(request, ["pandaid"])
    if isinstance(found, HttpResponse):
        return found
    name, pandaid = found
    if pandaid is not None:
        return _to(f"/job/{pandaid}/", request, drop=[name])
    return _to("/jobs/", request)


def job_fragment(request: HttpRequest, pandaid: int) -> HttpResponse:
    """`/jobrelationships/N/`, `/jobstatuslog/N/`, `/prmonplots/N/`: the job page holds the retry
    chain, the state history and the memory measurements."""
    return _to(f"/job/{pandaid}/", request, drop=["direction"])


def file_browser(request: HttpRequest) -> HttpResponse:
    """`/filebrowser/?pandaid=N` → the job page, whose log section has the payload log."""
    found = _id(request, ["pandaid"])
    if isinstance(found, HttpResponse):
        return found
    name, pandaid = found
    if pandaid is None:
        return bad_request(request, "pandaid is required")
    return _to(f"/job/{pandaid}/", request, drop=[name])


def task(request: HttpRequest) -> HttpResponse:
    """`/task?jeditaskid=N` (also `/taskchain/`) → `/task/N/`; `/task?taskname=…` → the task list."""
    found = _id(request, ["jeditaskid", "taskid"])
    if isinstance(found, HttpResponse):
        return found
    name, jeditaskid = found
    if jeditaskid is not None:
        return _to(f"/task/{jeditaskid}/", request, drop=[name])
    return _to("/tasks/", request)


def task_profile(request: HttpRequest, jeditaskid: int) -> HttpResponse:
    return _to(f"/task/{jeditaskid}/", request)


def dash(request: HttpRequest, view: str = "") -> HttpResponse:
    """`/dash/region/`, `/dash/production/`, `/dash/analysis/`, `/dash/world/` → `/dash/`."""
    return _to("/dash/", request)


def status_summary(request: HttpRequest) -> HttpResponse:
    """`/status_summary/` (job counts per queue and state) → `/sites/`."""
    return _to("/sites/", request)


def worker_nodes(request: HttpRequest, queue: str, node: str = "") -> HttpResponse:
    """`/wns/<queue>/` and `/wn/<queue>/<node>/` → that queue's jobs (facets by node)."""
    query = {"computingsite": queue, **({"modificationhost": node} if node else {})}
    rest = _rest(request, drop=query)
    return HttpResponseRedirect(f"/jobs/?{urlencode(query)}" + (f"&{rest}" if rest else ""))


def idds(request: HttpRequest) -> HttpResponse:
    """`/idds/`, `/idds/wfprogress/` → `/workflows/`, or `/workflow/N/` for one request: the
    request id a BPS user holds is the ailuro workflow id."""
    found = _id(request, _REQUEST_ID_PARAMS)
    if isinstance(found, HttpResponse):
        return found
    name, workflow_id = found
    if workflow_id is not None:
        return _to(f"/workflow/{workflow_id}/", request, drop=[name])
    return _to("/workflows/", request)


def idds_dag(request: HttpRequest) -> HttpResponse:
    """`/idds/daggraph/?idds_request_id=N` → the workflow page, which draws its task graph."""
    found = _id(request, _REQUEST_ID_PARAMS)
    if isinstance(found, HttpResponse):
        return found
    name, workflow_id = found
    if workflow_id is None:
        return bad_request(request, "idds_request_id is required")
    return _to(f"/workflow/{workflow_id}/", request, drop=[name])


def campaign_progress(request: HttpRequest) -> HttpResponse:
    """`/campprog/` → `/campaigns/`."""
    return _to("/campaigns/", request)
