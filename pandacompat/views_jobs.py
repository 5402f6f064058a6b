"""panda-client's job calls: `submitJobs`, `getJobStatus`, `killJobs` (`/api/v1/job/…`).

Each view authenticates the bearer token, reads and bounds its body, calls one service or named
read and answers in panda-client's envelope `{"success", "message", "data"}`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.parsers import JsonInputError, json_loads_guarded
from dispatcher import access
from dispatcher.services import WorkflowInvalid, workflow_cancel, workflow_submit_spec
from dispatcher.states import JobStatus
from pandacompat.client_common import BadRequest, caller, id_list, json_object, source_url
from pandacompat.jobspec import JobSpecInvalid, job_description, jobs_decode, jobs_to_spec
from pandacompat.queries.client import jobs_described, jobs_owned, workflow_job_ids
from pandacompat.views import envelope

MAX_JOBS_TEXT = 16 * 1024 * 1024  # the body cap of this path (AILURO_BODY_CAPS) bounds it first


@csrf_exempt
@require_POST
def job_submit(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/job/submit` `{"jobs": "<JSON of JobSpec states>"}`: one workflow of
    independent jobs; answers `[[PandaID, jobName, {"jobsetID", "jobDefinitionID"}], …]`."""
    who = caller(request, submit=True)
    if isinstance(who, JsonResponse):
        return who
    user, _ = who
    try:
        body = json_object(request, max_depth=2)
        text = body.get("jobs")
        if not isinstance(text, str):
            raise BadRequest("jobs must be a JSON string of JobSpec states (Client.submitJobs sends one)")
        if len(text) > MAX_JOBS_TEXT:
            raise BadRequest(f"jobs is longer than {MAX_JOBS_TEXT} characters", 413)
        try:
            states = json_loads_guarded(text, max_depth=6)
        except JsonInputError as exc:
            raise BadRequest(f"jobs is not valid JSON: {exc}") from None
        records = jobs_decode(states)
        name = next((str(r["jobName"]) for r in records if isinstance(r.get("jobName"), str)), "panda-jobs")
        spec = jobs_to_spec(records, name=name[:200], source_url=source_url(request))
        workflow = workflow_submit_spec(owner=user, spec=spec)
    except BadRequest as exc:
        return exc.reply()
    except JobSpecInvalid as exc:
        return envelope(False, exc.message, {"field": exc.field}, status=400)
    except WorkflowInvalid as exc:
        return envelope(False, exc.message, {"field": exc.field}, status=exc.status_code)
    ids = workflow_job_ids(workflow.pk)
    extra = {"jobsetID": workflow.pk, "jobDefinitionID": workflow.pk}
    return envelope(True, "", [[ids[job["name"]], job["name"], extra] for job in spec["jobs"]])


@csrf_exempt
@require_POST
def job_get_description(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/job/get_description` `{"job_ids": [...]}`: one dict per id (JobSpec
    attribute names plus `Files`), None for an id that does not exist."""
    who = caller(request)
    if isinstance(who, JsonResponse):
        return who
    try:
        ids = id_list(json_object(request, max_depth=3), "job_ids")
    except BadRequest as exc:
        return exc.reply()
    rows, files = jobs_described(ids)
    return envelope(
        True, "", [job_description(rows[i], files.get(i, [])) if i in rows else None for i in ids]
    )


@csrf_exempt
@require_POST
def job_kill(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/job/kill` `{"job_ids": [...]}`: cancel each job the caller may act on (its
    owner, or an operator); answers one boolean per id, true when that job is now cancelled by
    this call."""
    who = caller(request)
    if isinstance(who, JsonResponse):
        return who
    user, token = who
    try:
        ids = id_list(json_object(request, max_depth=3), "job_ids")
    except BadRequest as exc:
        return exc.reply()
    before = jobs_owned(ids)
    by_workflow: dict[int, list[int]] = defaultdict(list)
    for pandaid, (workflow_id, _, _) in before.items():
        by_workflow[workflow_id].append(pandaid)
    for workflow_id, pandaids in by_workflow.items():
        try:
            access.workflow_get_for_user(user, workflow_id, write=True, token=token)
        except (PermissionDenied, Http404):
            continue
        workflow_cancel(workflow_id=workflow_id, actor=user.get_username(), pandaids=pandaids)
    after = jobs_owned(ids)
    return envelope(True, "", [_killed(before.get(i), after.get(i)) for i in ids])


def _killed(before: Any, after: Any) -> bool:
    return (
        before is not None
        and after is not None
        and before[2] != JobStatus.CANCELLED
        and after[2] == JobStatus.CANCELLED
    )
