"""Writes of the dispatcher, one module per concern; import from here.

Every job status change goes through `job_transition` or `jobs_transition_bulk` (transitions.py).
"""

from __future__ import annotations

from dispatcher.services.attempts import AttemptOutcome, job_attempt_end
from dispatcher.services.dispatch import DispatchRequest, PilotUpdate, job_pilot_update, jobs_dispatch
from dispatcher.services.placement import broker_one_batch
from dispatcher.services.transitions import (
    TransitionResult,
    job_transition,
    jobs_transition_bulk,
    task_count_deltas_add,
    task_counts_fold,
    task_counts_recompute,
)
from dispatcher.services.workflows import (
    NewJob,
    WorkflowInvalid,
    WorkflowTooLarge,
    dag_find_cycle,
    jobs_set_memory,
    workflow_boost_priority,
    workflow_cancel,
    workflow_pause,
    workflow_restart,
    workflow_resume,
    workflow_retry,
    workflow_submit,
    workflow_submit_spec,
    workflow_validate,
)

__all__ = [
    "AttemptOutcome",
    "DispatchRequest",
    "PilotUpdate",
    "broker_one_batch",
    "job_pilot_update",
    "jobs_dispatch",
    "job_attempt_end",
    "NewJob",
    "TransitionResult",
    "WorkflowInvalid",
    "WorkflowTooLarge",
    "dag_find_cycle",
    "job_transition",
    "jobs_set_memory",
    "jobs_transition_bulk",
    "task_count_deltas_add",
    "task_counts_fold",
    "task_counts_recompute",
    "workflow_boost_priority",
    "workflow_cancel",
    "workflow_restart",
    "workflow_retry",
    "workflow_submit",
    "workflow_submit_spec",
    "workflow_validate",
    "workflow_pause",
    "workflow_resume",
]
