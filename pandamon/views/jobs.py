"""`/jobs/` (exact facets, keyset pages) and `/job/<pandaid>/` (debugging page, log tail, kill)."""

from __future__ import annotations

import shlex

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from ailuro import units
from dispatcher.access import job_get_for_user
from dispatcher.models import ArchivedJob, Job
from dispatcher.queries import archive_reached
from dispatcher.services import workflow_cancel, workflow_retry
from dispatcher.states import JOB_FINAL, JOB_NON_FINAL, JobStatus
from dispatcher.workflows import WorkflowInvalid
from pandamon import charts, rollups
from pandamon.filters import JOB_FIELDS, JOB_UNWINDOWED, FilterError, compile_selection, int_param
from pandamon.queries import common
from pandamon.queries import jobs as reads
from pandamon.views._common import bad_request, can_act, monitor_view, params_of, query_without, respond

FACET_SHOWN = 25
ACTIVE_NAMES = {s.value for s in JOB_NON_FINAL}


@monitor_view
def job_list(request: HttpRequest) -> HttpResponse:
    params = params_of(request)
    # Active states are shown whatever their age, as PanDA does (the page says so).
    active_only = bool(params.get("jobstatus")) and set(params["jobstatus"].split("|")) <= ACTIVE_NAMES
    sel = compile_selection(
        params,
        JOB_FIELDS,
        time_column="statechangetime",
        default_hours=12,
        unwindowed_by=JOB_UNWINDOWED | ({"jobstatus"} if active_only else set()),
    )
    sort = params.get("sortby") or "pandaid"
    if sort not in reads.JOB_SORTS:
        raise FilterError(f"sortby: {sort!r} is not one of {', '.join(reads.JOB_SORTS)}")
    limit = int_param(params, "display_limit", default=100, maximum=5000)
    # The archive holds final jobs only, all changed before its horizon: read it only for a window
    # reaching back that far (or none) and a selection that may hold final jobs.
    archive = not active_only and archive_reached(sel.since)
    bins = common.time_bin(sel.since, sel.until, timezone.now())
    unit = bins.unit
    rollup = reads.job_rollup_selection(sel.since, sel.until, sel.applied)
    # A selection the summaries cannot answer is counted by an indexed scan: the page says so, and
    # warns when the planner expects more rows than WEB_SCAN_WARN_ROWS (the statement timeout
    # bounds it either way).
    scanned = rollup is None and rollups.enabled()
    estimate = reads.jobs_scan_estimate(sel.q) if scanned else None
    scan_warning = estimate is not None and estimate > settings.AILURO["WEB_SCAN_WARN_ROWS"]
    facets = reads.jobs_facets(sel.q, unit=unit, rollup=rollup, archive=archive)
    merge = reads.merge_of(rollup, facets, sel)
    try:
        rows, next_cursor = reads.jobs_page(
            sel.q,
            sort=sort,
            cursor=params.get("cursor"),
            limit=limit,
            archive=archive,
            narrow=reads.sorts_narrow(sel.applied, facets, merge, archive=archive)
            or reads.past_window(sel.since, sel.until, timezone.now()),
            merge=merge,
        )
    except ValueError as exc:
        raise FilterError(str(exc)) from None
    base = query_without(params, "cursor")
    context = {
        "sel": sel,
        "rows": rows,
        "facets": {k: v[:FACET_SHOWN] for k, v in facets.facets.items() if v},
        "facet_more": {k: max(len(v) - FACET_SHOWN, 0) for k, v in facets.facets.items()},
        "total": facets.total,
        "scanned": scanned,
        "scan_estimate": estimate,
        "scan_warning": scan_warning,
        "next_query": f"{base}&cursor={next_cursor}" if next_cursor else None,
        "first_query": base,
        "base_query": query_without(params, "cursor", "sortby"),
        "params": params,
        "sort": sort,
        "sorts": list(reads.JOB_SORTS),
        "locked": sel.locked_query(params),
        "chart": charts.stacked_over_time(
            facets.over_time, title=f"Jobs by state per {bins.label} (UTC)", unit=unit, bin_hours=bins.hours
        ),
    }
    return respond(
        request,
        "pandamon/jobs.html",
        context,
        lambda: {
            "window": sel.window_label,
            "filters": sel.applied,
            "unknown_filters": sel.unknown,
            "total": facets.total,
            "counted_by": "scan" if scanned else "summaries",
            "scan_estimate_rows": estimate,
            "facets": facets.facets,
            "jobs": rows,
            "next_cursor": next_cursor,
        },
        partial="job-results",
    )


def _job_or_404(pandaid: int) -> Job | ArchivedJob:
    job = reads.job_detail(pandaid)
    if job is None:
        raise Http404(f"no job {pandaid}")
    return job


def reproduce_script(job: Job | ArchivedJob, inputs: list[str]) -> str:
    """A shell script re-running the payload offline: container, environment, command, inputs."""
    lines = [
        "#!/bin/sh",
        f"# Reproduce ailuro job {job.pandaid} ({job.name}), attempt {job.attemptnr}",
        "set -e",
    ]
    for lfn in inputs:
        lines.append(f"# input: {lfn}")
    for key, value in sorted((job.environment or {}).items()):
        lines.append(f"export {key}={shlex.quote(str(value))}")
    if job.container_image:
        lines.append(
            f"exec apptainer exec {shlex.quote(job.container_image)} sh -c {shlex.quote(job.command)}"
        )
    else:
        lines.append(job.command)
    return "\n".join(lines) + "\n"


@monitor_view
def job_detail(request: HttpRequest, pandaid: int) -> HttpResponse:
    job = _job_or_404(pandaid)
    archived = isinstance(job, ArchivedJob)
    attempts = reads.job_attempts(pandaid, archived=archived)
    history = reads.job_status_history(pandaid, archived=archived)
    files = reads.job_files(pandaid, archived=archived)
    parents, children = reads.job_relatives(pandaid, archived=archived)
    # A member is no cluster: only other jobs may have members. The archive keeps no cluster links.
    members = [] if archived or job.cluster_id else reads.job_cluster_members(pandaid)
    chunks = [] if archived else reads.job_log_chunks(pandaid, after=0, attemptnr=job.attemptnr)
    inputs = [f.lfn for f in files if f.role == "input"]
    final = job.jobstatus in JOB_FINAL
    allowed = can_act(request, job.produsername) and not archived
    context = {
        "job": job,
        "archived": archived,
        "attempts": attempts,
        "history": history,
        "files": files,
        "parents": parents,
        "children": children,
        "members": members,
        "cluster": job.cluster,
        "chunks": chunks,
        "last_seq": chunks[-1].sequence if chunks else 0,
        "final": final,
        "script": reproduce_script(job, inputs),
        "can_kill": not final and allowed,
        "can_retry": job.jobstatus == JobStatus.FAILED and allowed,
        "act_hint": (not final or job.jobstatus == JobStatus.FAILED) and not allowed,
        "walltime": (job.endtime - job.starttime) if job.starttime and job.endtime else None,
    }
    return respond(
        request,
        "pandamon/job.html",
        context,
        lambda: {
            "job": {
                f.attname: getattr(job, f.attname) for f in Job._meta.concrete_fields if f.attname != "lease"
            },
            "attempts": [
                {
                    k: v
                    for k, v in a.__dict__.items()
                    if not k.startswith("_") and k not in ("lease", "workflow_ended_at")
                }
                for a in attempts
            ],
            "status_history": [
                {
                    "time": h.time,
                    "from": h.previous,
                    "to": h.jobstatus,
                    "attemptnr": h.attemptnr,
                    "cause": h.cause,
                }
                for h in history
            ],
            "files": [
                {"lfn": f.lfn, "role": f.role, "dataset": f.dataset, "status": f.status} for f in files
            ],
            # The peak memory as every page shows it (kB stored, MB shown: `ailuro.units`).
            "max_rss_mb": units.mb_from_kb(job.max_rss_kb),
            "max_pss_mb": units.mb_from_kb(job.max_pss_kb),
            "kind": "final" if job.is_final else "dag",
            "archived": archived,
            "parents": parents,
            "children": children,
            "members": members,
        },
    )


@monitor_view
def job_log_tail(request: HttpRequest, pandaid: int) -> HttpResponse:
    """The live payload-log tail: chunks after `after`; htmx polls it and stops once the job is final."""
    job = _job_or_404(pandaid)
    params = params_of(request)
    after_text = params.get("after") or "0"
    if not after_text.isdigit():
        raise FilterError(f"after: {after_text!r} is not a non-negative integer")
    after = int(after_text)
    chunks = reads.job_log_chunks(pandaid, after=after, attemptnr=job.attemptnr)
    final = job.jobstatus in JOB_FINAL
    if "json" in request.GET:
        return JsonResponse(
            {"final": final, "chunks": [{"sequence": c.sequence, "text": c.text} for c in chunks]}
        )
    last = chunks[-1].sequence if chunks else after
    response = render(
        request,
        "pandamon/job.html#log-chunks",
        {"job": job, "chunks": chunks, "last_seq": last, "final": final},
    )
    if final and not chunks:
        stop = HttpResponseStopPolling()
        stop.content = response.content
        return stop
    return response


def _job_for_action(request: HttpRequest, pandaid: int) -> Job | ArchivedJob | HttpResponse:
    if not request.user.is_authenticated:
        return HttpResponse("log in to act on jobs", status=401)
    try:
        return job_get_for_user(request.user, pandaid, write=True)
    except PermissionDenied:
        return HttpResponse("only the workflow's owner or an operator may act on this job", status=403)
    except WorkflowInvalid as exc:  # archived: read-only
        return HttpResponse(exc.message, status=exc.status_code)


@require_POST
def job_kill(request: HttpRequest, pandaid: int) -> HttpResponse:
    """Kill = cancel this one job through the workflow service (pandamon writes nothing itself)."""
    job = _job_for_action(request, pandaid)
    if isinstance(job, HttpResponse):
        return job
    if job.jobstatus in JOB_FINAL:
        return bad_request(request, f"job {pandaid} is already {job.jobstatus}")
    result = workflow_cancel(
        workflow_id=job.workflow_id, actor=request.user.get_username(), pandaids=[pandaid]
    )
    if result["cancelled"]:
        messages.success(request, f"job {pandaid} cancelled")
    else:
        messages.warning(request, f"job {pandaid} changed state meanwhile; nothing done")
    return redirect("pandamon:job", pandaid=pandaid)


@require_POST
def job_retry(request: HttpRequest, pandaid: int) -> HttpResponse:
    """Retry a failed job (and the jobs pruned because of it) through the workflow service."""
    job = _job_for_action(request, pandaid)
    if isinstance(job, HttpResponse):
        return job
    if job.jobstatus != JobStatus.FAILED:
        return bad_request(request, f"job {pandaid} is {job.jobstatus}; only failed jobs are retried")
    result = workflow_retry(
        workflow_id=job.workflow_id, actor=request.user.get_username(), pandaids=[pandaid]
    )
    messages.success(
        request, f"job {pandaid}: {result.get('retried', 0)} retried, {result.get('unpruned', 0)} unpruned"
    )
    return redirect("pandamon:job", pandaid=pandaid)
