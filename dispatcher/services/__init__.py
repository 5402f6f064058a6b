"""Writes of the dispatcher, one module per concern; import from here.

Every job status change goes through `job_transition` or `jobs_transition_bulk` (transitions.py).
The pilot calls (dispatch, heartbeat, final update) are the package `pilot_calls`. Submission is
`submit.py` (its bulk inserts `job_insert.py`), the actions on a submitted workflow
`workflow_actions.py`; the loops' writes are `placement.py` (brokerage), `watcher.py`, `rollup.py`
and `janitor.py`.
"""

from __future__ import annotations

from dispatcher.services.attempts import AttemptOutcome, job_attempt_end
from dispatcher.services.pilot_calls import DispatchRequest, PilotUpdate, job_pilot_update, jobs_dispatch
from dispatcher.services.placement import broker_one_batch
from dispatcher.services.submit import (
    workflow_spec_explicit,
    workflow_submit,
    workflow_submit_spec,
    workflow_validate,
)
from dispatcher.services.transitions import (
    TransitionResult,
    job_transition,
    jobs_transition_bulk,
    queue_counts_fold,
    queue_counts_rebuild,
    task_count_deltas_add,
    task_counts_fold,
    task_counts_recompute,
)
from dispatcher.services.workflow_actions import (
    jobs_set_memory,
    workflow_boost_priority,
    workflow_cancel,
    workflow_pause,
    workflow_restart,
    workflow_resume,
    workflow_retry,
)
from dispatcher.workflows import NewJob, WorkflowInvalid, WorkflowTooLarge, dag_find_cycle

__all__ = [
    "AttemptOutcome",
    "DispatchRequest",
    "NewJob",
    "PilotUpdate",
    "TransitionResult",
    "WorkflowInvalid",
    "WorkflowTooLarge",
    "broker_one_batch",
    "dag_find_cycle",
    "job_attempt_end",
    "job_pilot_update",
    "job_transition",
    "jobs_dispatch",
    "jobs_set_memory",
    "jobs_transition_bulk",
    "queue_counts_fold",
    "queue_counts_rebuild",
    "task_count_deltas_add",
    "task_counts_fold",
    "task_counts_recompute",
    "workflow_boost_priority",
    "workflow_cancel",
    "workflow_pause",
    "workflow_restart",
    "workflow_resume",
    "workflow_retry",
    "workflow_spec_explicit",
    "workflow_submit",
    "workflow_submit_spec",
    "workflow_validate",
]
