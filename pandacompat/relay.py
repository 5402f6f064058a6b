"""The iDDS relay: commands `bps` sends through `POST /server/panda/relay_idds_command`.

ctrl_bps_panda talks to iDDS only through PanDA's relay; ailuro is both, so the relay is answered
here. A reply is `[true, result]` or `[false, message]` (`relay_reply`), the shape
`pandaclient.idds_api` unwraps. The submitter is always the authenticated identity: the payload's
`username` (null from every released client) is never read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings

from dispatcher import access
from dispatcher.services import WorkflowInvalid, workflow_submit_spec
from pandacompat.decoding import Budget, DecodeError, RelayCall, workflow_decode
from pandacompat.translate import Translation, workflow_to_spec

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
    handler = _HANDLERS.get(call.command)
    if handler is None:
        raise RelayRefused(f"{call.command} is not served by this server yet")
    return handler(call, user, token, budget)


def _ping(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    return {"Status": "OK"}


def _submit(call: RelayCall, user: Any, token: Any, budget: Budget) -> Any:
    access.submit_required(user, token)
    workflow = workflow_decode(call.args, budget=budget, max_depth=relay_max_depth())
    if workflow.is_step or workflow.with_steps:
        raise RelayRefused(
            "this workflow was sent in steps (it is larger than the client's maxRequestLength); "
            "steps are not accepted by this server yet: raise maxRequestLength"
        )
    translation = workflow_to_spec(workflow)
    try:
        return relay_submit_spec(owner=user, translation=translation)
    except WorkflowInvalid as exc:
        if exc.status_code == 413:
            raise DecodeError(exc.message, 413) from None
        raise RelayRefused(exc.message) from None


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


_HANDLERS: Mapping[str, Callable[[RelayCall, Any, Any, Budget], Any]] = {
    "ping": _ping,
    "submit": _submit,
}
