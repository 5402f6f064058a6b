"""The iDDS relay: commands `bps` sends through `POST /server/panda/relay_idds_command`.

ctrl_bps_panda talks to iDDS only through PanDA's relay; ailuro is both, so the relay is answered
here. A reply is `[true, result]` or `[false, message]` (`relay_reply`), the shape
`pandaclient.idds_api` unwraps. The submitter is always the authenticated identity: the payload's
`username` (null from every released client) is never read.

Served: `ping`, `submit` (whole, or in steps: `pandacompat.steps`), `get_requests` (bps report,
status, list), `get_status` (panda_auth), `get_contents_output_ext` (report's exit codes),
`abort` (bps cancel) and `retry` (bps restart). Reads are `pandacompat.queries.relay`; writes go
through the dispatcher's services; access follows `dispatcher.access` as the REST API does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404

from dispatcher import access
from dispatcher.models import Workflow
from dispatcher.services import WorkflowInvalid, workflow_cancel, workflow_retry, workflow_submit_spec
from pandacompat.decoding import Budget, DecodeError, IddsWorkflow, RelayCall, workflow_decode
from pandacompat.queries import relay as queries
from pandacompat.steps import StepRefused, workflow_step_store, workflow_steps_delete, workflow_steps_read
from pandacompat.translate import Translation, step_map_key, workflow_to_spec

log = logging.getLogger(__name__)

# What `PanDAService` and `panda_auth` send (ctrl_bps_panda and panda-client).
COMMANDS = frozenset(
    {"ping", "submit", "get_requests", "get_status", "get_contents_output_ext", "abort", "retry"}
)


class RelayRefused(Exception):
    """A command the relay answers `[false, message]` (HTTP 200: the client shows the message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def relay_budget() -> Budget:
    limit = int(settings.AILURO_PANDACOMPAT["RELAY_MAX_DECODED_BYTES"])
    return Budget(remaining=limit, limit=limit)


def relay_max_depth() -> int:
    return int(settings.AILURO_PANDACOMPAT["RELAY_MAX_DEPTH"])


def relay_command(call: RelayCall, *, user: Any, token: Any, budget: Budget) -> Any:
    """The result of one allowed command. Raises DecodeError (400/413) for a command or payload
    that is not acceptable, RelayRefused for one that is but cannot be done, and PermissionDenied
    for an identity that may not use it."""
    if call.command not in COMMANDS:
        raise DecodeError(f"command {call.command!r} is not relayed; allowed: {', '.join(sorted(COMMANDS))}")
    access.read_required(user, token)
    return _HANDLERS[call.command](call, user, token, budget)


def _ping(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    return {"Status": "OK"}


def _submit(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    access.submit_required(user, token)
    workflow = workflow_decode(call.args, budget=budget, max_depth=relay_max_depth())
    try:
        if workflow.is_step:
            # ctrl_bps_panda requires 0 for a step (anything else is taken as a failed submit).
            workflow_step_store(owner=user, workflow=workflow)
            return 0
        if workflow.with_steps:
            return _submit_with_steps(user, workflow)
        return relay_submit_spec(owner=user, translation=workflow_to_spec(workflow))
    except StepRefused as exc:
        raise DecodeError(exc.message, exc.status) from None
    except WorkflowInvalid as exc:
        if exc.status_code == 413:
            raise DecodeError(exc.message, 413) from None
        raise RelayRefused(exc.message) from None


@transaction.atomic
def _submit_with_steps(user: Any, workflow: IddsWorkflow) -> int:
    """The main workflow of a submission in steps: its works' maps come from the user's stored
    steps (pandacompat.steps), which are deleted once it is submitted."""
    wanted = {step_map_key(work.map_file) for work in workflow.works if work.map_file is not None}
    stored = workflow_steps_read(owner=user, task_names=wanted)
    missing = sorted(wanted - set(stored))
    if missing:
        raise RelayRefused(
            f"workflow {workflow.name!r} was sent in steps, and no stored step of yours carries the "
            f"dependency map of {', '.join(missing)} (steps expire after "
            f"{int(settings.AILURO_PANDACOMPAT['STEP_TTL_S'])} s): submit it again"
        )
    request_id = relay_submit_spec(owner=user, translation=workflow_to_spec(workflow, stored_maps=stored))
    workflow_steps_delete(owner=user, task_names=stored)
    return request_id


def relay_submit_spec(*, owner: Any, translation: Translation) -> int:
    """Submit a translated BPS workflow through the dispatcher's submit service; the request id
    the client keeps is the workflow id.

    BPS's final jobs are submitted as ailuro final jobs (`"final": true`,
    docs/user-guide/workflows.md#final-jobs): they run once every other job of the workflow has
    ended, finished, failed for good, pruned or cancelled, as BPS's finalJob does; a final job
    names no parents (it waits for the whole workflow).
    """
    spec = dict(translation.spec)
    if translation.final_jobs:
        finals = [
            {**{k: v for k, v in final.items() if k != "depends_on"}, "final": True}
            for final in translation.final_jobs
        ]
        spec["jobs"] = list(spec["jobs"]) + finals
        spec["labels"] = {**spec.get("labels", {}), **translation.final_labels}
    workflow = workflow_submit_spec(owner=owner, spec=spec)
    log.info(
        "BPS workflow %s submitted through the iDDS relay as workflow %s",
        spec.get("name"),
        workflow.pk,
        extra={"event": "relay.submit", "workflow_id": workflow.pk},
    )
    return int(workflow.pk)


# --- reads and actions on a request (an ailuro workflow) -----------------------------------------

# `get_requests` without a request id lists the caller's newest workflows, at most this many.
REQUESTS_LIST_LIMIT = 100


def _request_id(call: RelayCall, *, required: bool = True) -> int | None:
    """The `request_id` kwarg as a workflow id: the CLI sends it as a string, the API as an int."""
    raw = call.kwargs.get("request_id")
    if raw is None and not required:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise RelayRefused(f"{call.command} needs a request_id (the workflow id bps printed at submit)")
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 18:
        raise RelayRefused(f"request_id {text[:40]!r} is not a request id (a workflow id, digits only)")
    return int(text)


def _with_detail(call: RelayCall) -> bool:
    value = call.kwargs.get("with_detail", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RelayRefused("with_detail must be true or false")
    return value


def _workflow(user: Any, token: Any, request_id: int, *, write: bool = False) -> Workflow:
    try:
        return access.workflow_get_for_user(user, request_id, write=write, token=token)
    except Http404:
        raise RelayRefused(f"no request {request_id}") from None


def _get_requests(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    """Rows as `bps report` (with detail), `bps status` (without) and `bps list` read them. Any
    reader may read any workflow, as on the REST API (dispatcher.access); an id that names no
    workflow is an empty list (bps then says "No records found")."""
    request_id = _request_id(call, required=False)
    with_detail = _with_detail(call)
    if request_id is None:
        workflows = queries.requests_of_owner(getattr(user, "pk", 0), limit=REQUESTS_LIST_LIMIT)
        return [row for wf in workflows for row in queries.request_rows(wf, with_detail=with_detail)]
    try:
        workflow = _workflow(user, token, request_id)
    except RelayRefused:
        return []
    return queries.request_rows(workflow, with_detail=with_detail)


def _get_status(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    """`panda_auth` checks its token with `get_status(request_id=0)` and wants a result that has
    `request_id` and `status`: request 0 names no workflow, so its status is null."""
    request_id = _request_id(call, required=False) or 0
    if request_id == 0:
        return {"request_id": 0, "status": None, "username": getattr(user, "username", "")}
    head = queries.request_head(_workflow(user, token, request_id))
    return {**head, "status": head["status"]["attributes"]["_name_"]}


def _get_contents_output_ext(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    """`{"<workload_id>": [one row per failed job of that task]}`: `bps report` reads the
    `trans_exit_code` of each."""
    workflow = _workflow(user, token, _request_id(call) or 0)
    raw = call.kwargs.get("workload_id")
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip().isdigit():
        raise RelayRefused("get_contents_output_ext needs a workload_id (a transform_workload_id)")
    task_id = int(str(raw).strip())
    if not queries.task_of_workflow(workflow.pk, task_id):
        raise RelayRefused(f"request {workflow.pk} has no workload {task_id}")
    return {str(task_id): queries.failed_job_exits(task_id)}


def _abort(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    """`bps cancel`: cancel the workflow (owner or operator, as the REST action)."""
    workflow = _workflow(user, token, _request_id(call) or 0, write=True)
    try:
        return workflow_cancel(workflow_id=workflow.pk, actor=user.username)
    except WorkflowInvalid as exc:
        raise RelayRefused(exc.message) from None


def _retry(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    """`bps restart`: the failed jobs run again, and the jobs pruned because of them; finished
    jobs do not (as a restart of a BPS run from its submit directory)."""
    workflow = _workflow(user, token, _request_id(call) or 0, write=True)
    try:
        return workflow_retry(workflow_id=workflow.pk, actor=user.username)
    except WorkflowInvalid as exc:
        raise RelayRefused(exc.message) from None


_HANDLERS: Mapping[str, Callable[[RelayCall, Any, Any, Budget], Any]] = {
    "ping": _ping,
    "submit": _submit,
    "get_requests": _get_requests,
    "get_status": _get_status,
    "get_contents_output_ext": _get_contents_output_ext,
    "abort": _abort,
    "retry": _retry,
}
