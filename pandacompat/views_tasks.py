"""panda-client's task calls (`/api/v1/task/…`): prun's `insertTaskParams`, pbook's kill, finish,
retry, pause and resume, and the status reads pbook shows.

A JEDI task is an ailuro task (`jeditaskid`). Its `reqID` is answered as the task's own id:
pbook reads any id below 10,000,000 as a reqID (`PBookCore.is_reqid`) and ailuro's ids are small,
so `pbook kill N` must find task N, not the tasks of workflow N (`workflowID` carries that). The
verbs answer as JEDI does: HTTP 200 with `data` the return code (0 done, 2 no such task,
3 permission denied, 4 irrelevant task status) and `success` true only for 0, so panda-client and
pbook print the message. Authentication and role failures are 401/403 and malformed requests 400,
as on every ailuro endpoint.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from dispatcher import access
from dispatcher.models import Task
from dispatcher.services import (
    WorkflowInvalid,
    workflow_cancel,
    workflow_pause,
    workflow_resume,
    workflow_retry,
    workflow_submit_spec,
)
from dispatcher.services.submit import max_dag_jobs, task_chunk_size
from dispatcher.states import TASK_FINAL, JobStatus
from pandacompat.cache import cache_path
from pandacompat.client_common import BadRequest, caller, json_object, positive_id, source_url
from pandacompat.jobspec import wire_datetime
from pandacompat.queries.client import (
    task_job_ids,
    task_status_now,
    tasks_with_counts,
    workflow_task_count,
    workflow_task_ids,
)
from pandacompat.taskparams import TaskParamsInvalid, task_plan
from pandacompat.views import envelope

OK, NOT_FOUND, DENIED, IRRELEVANT, REFUSED = 0, 2, 3, 4, 1
MAX_TASKS = 1000
# pbook's filters (JediTaskSpec attribute names) → Task lookups; status filters are applied to
# the status derived from the counts, after the query.
_FILTERS = {"jediTaskID": "jeditaskid", "reqID": "jeditaskid", "taskName": "name", "userName": "username"}
_STATUS_FILTERS = ("status", "superStatus")


def _code(code: int, message: str, data: Any = None) -> JsonResponse:
    return envelope(code == OK, message, code if data is None else data)


# --- submit ------------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def task_submit(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/task/submit` `{"task_parameters": {...}, "parent_tid": null}`: prun's
    no-input task as one workflow of nEvents/nEventsPerJob jobs; the message carries
    `jediTaskID=N` for prun. The user is the token's identity (the payload's userName is not read)."""
    who = caller(request, submit=True)
    if isinstance(who, JsonResponse):
        return who
    user, _ = who
    try:
        body = json_object(request, max_depth=12)
        params = body.get("task_parameters")
        if isinstance(params, str):  # older clients send the map JSON-encoded
            params = json_object_text(params)
        if not isinstance(params, dict):
            raise BadRequest("task_parameters must be a JSON object of JEDI task parameters")
        if body.get("parent_tid") is not None:
            raise BadRequest("parent_tid: child tasks are not supported by this server")
    except BadRequest as exc:
        return exc.reply()
    try:
        plan = task_plan(
            params, source_url=source_url(request), max_jobs=min(max_dag_jobs(), task_chunk_size())
        )
        if plan.sandbox is not None and cache_path(plan.sandbox) is None:
            raise TaskParamsInvalid(
                f"the sandbox {plan.sandbox} is not in this server's cache; upload it first", "jobParameters"
            )
        workflow = workflow_submit_spec(owner=user, spec=plan.spec)
    except TaskParamsInvalid as exc:
        return envelope(False, f"{exc.field}: {exc.message}", REFUSED)
    except WorkflowInvalid as exc:
        return envelope(False, exc.message, REFUSED)
    task_id = workflow_task_ids(workflow.pk)[0]
    return envelope(True, f"succeeded. new jediTaskID={task_id}", task_id)


def json_object_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest("task_parameters is not valid JSON") from None


# --- verbs ---------------------------------------------------------------------------------


def _task_verb(
    request: HttpRequest, act: Callable[[Task, str, dict[str, Any]], JsonResponse]
) -> HttpResponse:
    who = caller(request)
    if isinstance(who, JsonResponse):
        return who
    user, token = who
    try:
        body = json_object(request, max_depth=4)
        task_id = positive_id(body.get("task_id"), "task_id")
    except BadRequest as exc:
        return exc.reply()
    try:
        task = access.task_get_for_user(user, task_id, write=True, token=token)
    except Http404:
        return _code(NOT_FOUND, f"jediTaskID={task_id} not found")
    except PermissionDenied as exc:
        return _code(DENIED, f"jediTaskID={task_id}: {exc}")
    try:
        return act(task, user.get_username(), body)
    except WorkflowInvalid as exc:
        return _code(IRRELEVANT, f"jediTaskID={task_id}: {exc.message}")


def _labels(task: Task) -> list[str] | None:
    """The selection of one task: none when it is its workflow's only task (the workflow itself
    then takes the action's state too)."""
    return None if workflow_task_count(task.workflow_id) == 1 else [task.label]


def _status(task: Task) -> str:
    [(row, counts)] = tasks_with_counts(filters={"jeditaskid": task.pk}, since=None, limit=1)
    return task_status_now(row["status"], counts)


def _kill(task: Task, actor: str, body: dict[str, Any]) -> JsonResponse:
    status = _status(task)
    if status in TASK_FINAL:
        return _code(IRRELEVANT, f"jediTaskID={task.pk} is already {status}")
    result = workflow_cancel(workflow_id=task.workflow_id, actor=actor, labels=_labels(task))
    return _code(OK, f"jediTaskID={task.pk}: {result['cancelled']} jobs cancelled")


def _finish(task: Task, actor: str, body: dict[str, Any]) -> JsonResponse:
    """JEDI's finish: no new jobs start; jobs already dispatched run to their end."""
    status = _status(task)
    if status in TASK_FINAL:
        return _code(IRRELEVANT, f"jediTaskID={task.pk} is already {status}")
    result = workflow_cancel(
        workflow_id=task.workflow_id,
        actor=actor,
        labels=[task.label],
        jobstatus=[JobStatus.DEFINED, JobStatus.ACTIVATED],
    )
    return _code(
        OK, f"jediTaskID={task.pk}: {result['cancelled']} queued jobs cancelled; running jobs finish"
    )


def _retry(task: Task, actor: str, body: dict[str, Any]) -> JsonResponse:
    if body.get("new_parameters"):
        return _code(REFUSED, "retrying with new task parameters is not supported by this server")
    result = workflow_retry(workflow_id=task.workflow_id, actor=actor, labels=[task.label])
    if not result["retried"] and not result["unpruned"]:
        return _code(IRRELEVANT, f"jediTaskID={task.pk} has no failed jobs to retry")
    return _code(OK, f"jediTaskID={task.pk}: {result['retried']} failed jobs retried")


def _pause(task: Task, actor: str, body: dict[str, Any]) -> JsonResponse:
    result = workflow_pause(workflow_id=task.workflow_id, actor=actor, labels=_labels(task))
    return _code(OK, f"jediTaskID={task.pk} paused; {result['held']} queued jobs held")


def _resume(task: Task, actor: str, body: dict[str, Any]) -> JsonResponse:
    result = workflow_resume(workflow_id=task.workflow_id, actor=actor, labels=_labels(task))
    if not result["resumed_tasks"]:
        return _code(IRRELEVANT, f"jediTaskID={task.pk} is not paused")
    return _code(OK, f"jediTaskID={task.pk} resumed")


def _verb_view(act: Callable[[Task, str, dict[str, Any]], JsonResponse], doc: str) -> Any:
    @csrf_exempt
    @require_POST
    def view(request: HttpRequest) -> HttpResponse:
        return _task_verb(request, act)

    view.__doc__ = doc
    return view


task_kill = _verb_view(_kill, "`POST /api/v1/task/kill` `{task_id}`: cancel the task's jobs.")
task_finish = _verb_view(_finish, "`POST /api/v1/task/finish` `{task_id[, soft]}`: cancel its queued jobs.")
task_retry = _verb_view(_retry, "`POST /api/v1/task/retry` `{task_id}`: retry its failed jobs.")
task_pause = _verb_view(_pause, "`POST /api/v1/task/pause` `{task_id}`: hold its queued jobs.")
task_resume = _verb_view(_resume, "`POST /api/v1/task/resume` `{task_id}`: release a paused task.")


# --- reads ---------------------------------------------------------------------------------


def _query_id(request: HttpRequest) -> int:
    return positive_id(request.GET.get("task_id"), "task_id")


def task_dict(row: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """A task as JEDI's task dicts name it (what pbook's LocalTaskSpec reads)."""
    status = task_status_now(row["status"], counts)
    total = sum(counts.values())
    finished = counts.get(JobStatus.FINISHED, 0)
    failed = counts.get(JobStatus.FAILED, 0)
    return {
        "jediTaskID": row["jeditaskid"],
        "reqID": row["jeditaskid"],
        "workflowID": row["workflow_id"],
        "taskName": row["name"],
        "userName": row["username"],
        "status": status,
        "superStatus": status,
        "taskType": "anal",
        "prodSourceLabel": "user",
        "taskPriority": row["priority"],
        "coreCount": row["cores"],
        "ramCount": row["memory_mb"],
        "walltime": row["walltime_s"],
        "creationDate": wire_datetime(row["created_at"]),
        "modificationTime": wire_datetime(row["modified_at"]),
        "endTime": wire_datetime(row["ended_at"]),
        "nFiles": total,
        "nFilesFinished": finished,
        "nFilesFailed": failed,
        "pctFinished": round(100 * finished / total) if total else 0,
        "pctFailed": round(100 * failed / total) if total else 0,
        "jobStates": dict(counts),
    }


def _read(request: HttpRequest, answer: Callable[[Any, Any], JsonResponse]) -> HttpResponse:
    who = caller(request)
    if isinstance(who, JsonResponse):
        return who
    try:
        return answer(*who)
    except BadRequest as exc:
        return exc.reply()


def _one_task(task_id: int) -> tuple[dict[str, Any], dict[str, int]] | None:
    found = tasks_with_counts(filters={"jeditaskid": task_id}, since=None, limit=1)
    return found[0] if found else None


@require_GET
def task_get_status(request: HttpRequest) -> HttpResponse:
    """`GET /api/v1/task/get_status?task_id=N`: the task's JEDI status."""

    def answer(user: Any, token: Any) -> JsonResponse:
        task_id = _query_id(request)
        found = _one_task(task_id)
        if found is None:
            return envelope(False, "Task not found")
        return envelope(True, "", task_status_now(found[0]["status"], found[1]))

    return _read(request, answer)


@require_GET
def task_get_details(request: HttpRequest) -> HttpResponse:
    """`GET /api/v1/task/get_details?task_id=N`: the task dict (as in the task lists)."""

    def answer(user: Any, token: Any) -> JsonResponse:
        found = _one_task(_query_id(request))
        if found is None:
            return envelope(False, "Task not found or error retrieving the details")
        return envelope(True, "", task_dict(*found))

    return _read(request, answer)


@require_GET
def task_get_job_ids(request: HttpRequest) -> HttpResponse:
    """`GET /api/v1/task/get_job_ids?task_id=N`: the PandaIDs of the task's jobs."""

    def answer(user: Any, token: Any) -> JsonResponse:
        return envelope(True, "", task_job_ids(_query_id(request)))

    return _read(request, answer)


@require_GET
def task_get_tasks_detailed_info_since(request: HttpRequest) -> HttpResponse:
    """`GET /api/v1/task/get_tasks_detailed_info_since?n_tasks=&since=&filters=`: pbook's task
    list. The caller's own tasks unless `filters` names a userName; `since` is UTC
    `%Y-%m-%d %H:%M:%S`; filters are equality on jediTaskID, reqID, taskName, userName, status,
    superStatus."""

    def answer(user: Any, token: Any) -> JsonResponse:
        limit = _n_tasks(request.GET.get("n_tasks"))
        since = _since(request.GET.get("since"))
        raw = _filters(request.GET.get("filters"))
        lookups: dict[str, Any] = {"username": user.get_username()}
        wanted_status: set[str] = set()
        for key, value in raw.items():
            if key in _STATUS_FILTERS:
                wanted_status.add(value)
            elif key in ("jediTaskID", "reqID"):
                lookups[_FILTERS[key]] = positive_id(value, f"filters.{key}")
            else:
                lookups[_FILTERS[key]] = value
        rows = [
            task_dict(row, counts)
            for row, counts in tasks_with_counts(filters=lookups, since=since, limit=limit)
        ]
        if wanted_status:
            rows = [row for row in rows if row["status"] in wanted_status]
        return envelope(True, "", rows)

    return _read(request, answer)


def _n_tasks(raw: str | None) -> int:
    if raw is None:
        return 500
    if not raw.isdigit() or not 0 < int(raw) <= MAX_TASKS:
        raise BadRequest(f"n_tasks must be an integer from 1 to {MAX_TASKS}")
    return int(raw)


def _since(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        return dt.datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        raise BadRequest(f"since must be '%Y-%m-%d %H:%M:%S' (UTC), got {raw[:40]!r}") from None


def _filters(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    if len(raw) > 4096:
        raise BadRequest("filters is longer than 4096 characters")
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest("filters must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("filters must be a JSON object")
    out: dict[str, str] = {}
    for key, item in value.items():
        if key not in _FILTERS and key not in _STATUS_FILTERS:
            known = ", ".join([*_FILTERS, *_STATUS_FILTERS])
            raise BadRequest(f"filters: {key[:40]!r} is not a filter of this server ({known})")
        if not isinstance(item, (str, int)) or isinstance(item, bool) or len(str(item)) > 250:
            raise BadRequest(f"filters.{key} must be a string")
        out[key] = str(item)
    return out
