"""Job, task and workflow states, and the one table of allowed job transitions
(docs/architecture.md#job-states).

Everything that changes a job's status asks `transition_allowed` first (the transition services
raise `TransitionRefused` otherwise); the table below is the only place the state machine is
written down, and `docs/` renders it for operators.
"""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    DEFINED = "defined", "defined"
    ACTIVATED = "activated", "activated"
    SENT = "sent", "sent"
    STARTING = "starting", "starting"
    RUNNING = "running", "running"
    HOLDING = "holding", "holding"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    CLOSED = "closed", "closed"
    PRUNED = "pruned", "pruned"


JOB_FINAL = frozenset(
    {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CLOSED, JobStatus.PRUNED}
)
JOB_ACTIVE = frozenset({JobStatus.SENT, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.HOLDING})
JOB_NON_FINAL = frozenset(JobStatus) - JOB_FINAL
# What brokerage weighs a queue by, counted per queue (QueueCount): its jobs waiting and in flight.
# A job moving between two states of one kind (sent → starting → running) changes no count.
QUEUE_LOAD_KINDS: dict[str, str] = {
    JobStatus.ACTIVATED: "activated",
    JobStatus.SENT: "in_flight",
    JobStatus.STARTING: "in_flight",
    JobStatus.RUNNING: "in_flight",
}
# Final states a restart may bring back to `defined`; finished jobs are never re-run.
JOB_RESTARTABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED})

_J = JobStatus
# from-state -> states it may move to. Read with the diagram in docs/architecture.md#job-states:
# * defined -> activated when parents are done and brokerage picked a queue;
# * activated -> defined when the queue is taken away (re-brokerage);
# * a pilot may skip `starting` and report `running` or even the final state straight from `sent`;
# * a failed attempt that may be retried goes back to `defined` with attemptnr + 1;
# * any non-final state may be cancelled (user), closed (superseded) or pruned (a parent failed);
# * restart takes failed / cancelled / pruned back to `defined`; a final job that finished goes back
#   to `defined` too when a restart or retry runs other jobs of its workflow again (it runs after
#   them again, as BPS's finalJob); other finished jobs never re-run (`JOB_RESTARTABLE`);
# * a late `finished` report of an attempt the watcher failed for a lost heartbeat, before any
#   later attempt was dispatched, finishes the job from `defined`, `activated` (waiting for the
#   retry) or `failed` (no retry left): `pilot_calls.late_report`;
# * a cluster member is never dispatched itself: it goes from `defined` to `finished` or `failed`
#   when an attempt of its cluster job ends (`services.clusters`).
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _J.DEFINED: frozenset({_J.ACTIVATED, _J.FINISHED, _J.FAILED}),
    _J.ACTIVATED: frozenset({_J.SENT, _J.DEFINED, _J.FINISHED}),
    _J.SENT: frozenset({_J.STARTING, _J.RUNNING, _J.HOLDING, _J.FINISHED, _J.FAILED, _J.DEFINED}),
    _J.STARTING: frozenset({_J.RUNNING, _J.HOLDING, _J.FINISHED, _J.FAILED, _J.DEFINED}),
    _J.RUNNING: frozenset({_J.HOLDING, _J.FINISHED, _J.FAILED, _J.DEFINED}),
    _J.HOLDING: frozenset({_J.FINISHED, _J.FAILED, _J.DEFINED}),
    _J.FINISHED: frozenset({_J.DEFINED}),
    _J.FAILED: frozenset({_J.DEFINED, _J.FINISHED}),
    _J.CANCELLED: frozenset({_J.DEFINED}),
    _J.CLOSED: frozenset(),
    _J.PRUNED: frozenset({_J.DEFINED}),
}
for _state in JOB_NON_FINAL:
    JOB_TRANSITIONS[_state] = JOB_TRANSITIONS[_state] | {_J.CANCELLED, _J.CLOSED, _J.PRUNED}


class TransitionRefused(ValueError):
    """The state machine has no edge from the job's state to the requested one."""

    def __init__(self, pandaid: int, current: str, target: str) -> None:
        self.pandaid = pandaid
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(JOB_TRANSITIONS.get(JobStatus(current), ()))) or "none (final)"
        super().__init__(
            f"job {pandaid}: no transition {current} -> {target}; from {current} the allowed targets are {allowed}"
        )


def transition_allowed(current: str, target: str) -> bool:
    return JobStatus(target) in JOB_TRANSITIONS[JobStatus(current)]


def sources_of(target: str) -> frozenset[JobStatus]:
    """All states from which `target` may be reached (the `WHERE status IN (...)` of a CAS)."""
    return frozenset(src for src, targets in JOB_TRANSITIONS.items() if JobStatus(target) in targets)


class TaskStatus(models.TextChoices):
    """JEDI's task states (docs/architecture.md#job-states)."""

    READY = "ready", "ready"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    DONE = "done", "done"  # every job finished
    FINISHED = "finished", "finished"  # some jobs failed or were pruned
    FAILED = "failed", "failed"  # no job finished
    ABORTED = "aborted", "aborted"


TASK_FINAL = frozenset({TaskStatus.DONE, TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.ABORTED})


class WorkflowStatus(models.TextChoices):
    SUBMITTED = "submitted", "submitted"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    DONE = "done", "done"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


WORKFLOW_FINAL = frozenset(
    {WorkflowStatus.DONE, WorkflowStatus.FINISHED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED}
)


def rollup_status(counts: dict[str, int]) -> str:
    """The JEDI-style status of a set of jobs (a task, or a workflow's tasks) from exact counts.

    1. Any non-final job → running (or ready if none has been released yet).
    2. All final: every job finished → done; some finished → finished; none finished → failed.
    3. All cancelled → aborted.
    """
    total = sum(counts.values())
    if total == 0:
        return TaskStatus.READY
    non_final = sum(n for status, n in counts.items() if JobStatus(status) in JOB_NON_FINAL)
    if non_final:
        untouched = counts.get(JobStatus.DEFINED, 0)
        return TaskStatus.READY if untouched == total else TaskStatus.RUNNING
    finished = counts.get(JobStatus.FINISHED, 0) + counts.get(JobStatus.CLOSED, 0)
    if counts.get(JobStatus.CANCELLED, 0) == total:
        return TaskStatus.ABORTED
    if finished == total:
        return TaskStatus.DONE
    if finished:
        return TaskStatus.FINISHED
    return TaskStatus.FAILED


_WORKFLOW_OF_TASK = {
    TaskStatus.READY: WorkflowStatus.SUBMITTED,
    TaskStatus.RUNNING: WorkflowStatus.RUNNING,
    TaskStatus.DONE: WorkflowStatus.DONE,
    TaskStatus.FINISHED: WorkflowStatus.FINISHED,
    TaskStatus.FAILED: WorkflowStatus.FAILED,
    TaskStatus.ABORTED: WorkflowStatus.CANCELLED,
}


def task_status_derive(current: str, counts: dict[str, int]) -> str:
    """A task's next status from its exact counts. A paused task stays paused while it has
    unfinished jobs, and an aborted one stays aborted (both are operators' decisions, not the
    counters'; a restart sets the status itself)."""
    if current == TaskStatus.ABORTED:
        return current
    derived = rollup_status(counts)
    if current == TaskStatus.PAUSED and derived not in TASK_FINAL:
        return current
    return derived


def workflow_status_derive(current: str, counts: dict[str, int]) -> str:
    """A workflow's next status from the exact counts of all its jobs. Same JEDI semantics as a
    task; aborted (every job cancelled) reads `cancelled` for a workflow."""
    derived = _WORKFLOW_OF_TASK[TaskStatus(rollup_status(counts))]
    if current == WorkflowStatus.PAUSED and derived not in WORKFLOW_FINAL:
        return current
    return derived
