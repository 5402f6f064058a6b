"""A late `finished` report: the pilot of attempt N reports its payload finished after the watcher
failed that attempt for a lost heartbeat (a network partition, an overloaded server).

When no later attempt has started — the job waits for its retry (`defined` or `activated` at
attempt N + 1) or failed for good at attempt N — the payload's result wins instead of running it
again: attempt N's row becomes `finished` with the report's data, the job is finished at attempt
N (its status log says it was reconciled from a late report, counters and change feed move like
any transition), and its children are released; after a final failure the descendants pruned
because of it are brought back to `defined` (unless another parent of theirs failed too), and a
task or workflow the rollup had ended is derived again. Once a later attempt was dispatched, the report is refused
like any stale update (the caller answers `tobekilled`).

The report passes the same fence as a live one, against attempt N's row: its queue among the
token's, and the lease of attempt N's dispatch where that queue requires it. Rare by nature, so
one ORM transaction on every database; called only for `finished` updates no statement wrote.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, JobDependency, Queue, Task, Workflow
from dispatcher.queries import job_descendants
from dispatcher.retry import ERROR_FIELDS
from dispatcher.services.attempts import DIAG_MAX
from dispatcher.services.clusters import cluster_attempt_settle
from dispatcher.services.final_jobs import final_jobs_hold
from dispatcher.services.pilot_calls.messages import METRIC_NAMES, PilotUpdate, UpdateReply, lease_matches
from dispatcher.services.release import job_children_release
from dispatcher.services.transitions import job_transition, jobs_transition_bulk
from dispatcher.services.watcher import EC_LOST_HEARTBEAT
from dispatcher.states import JobStatus, TaskStatus, WorkflowStatus

log = logging.getLogger(__name__)

# The job's state while attempt N's retry has not been dispatched yet.
_WAITING_FOR_RETRY = (JobStatus.DEFINED, JobStatus.ACTIVATED)
# A parent in one of these keeps its pruned children pruned.
_BLOCKING = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CLOSED, JobStatus.PRUNED)
_ATTEMPT_METRICS = ("cpu_time_s", "max_rss_kb", "max_pss_kb")
_REOPENED_TASK = (TaskStatus.DONE, TaskStatus.FINISHED, TaskStatus.FAILED)
_REOPENED_WORKFLOW = (WorkflowStatus.DONE, WorkflowStatus.FINISHED, WorkflowStatus.FAILED)


def job_late_finish_reconcile(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply | None:
    """Finish the job from a late `finished` report of an attempt the watcher failed for a lost
    heartbeat, if no later attempt has started; None (nothing written) otherwise."""
    if update.status != JobStatus.FINISHED or not _waiting(Job.objects.all(), update):
        return None  # the common miss (a duplicate, a stale pilot) costs one read, no lock
    with transaction.atomic():
        job = _waiting(Job.objects.select_for_update(), update)
        if job is None:
            return None
        n = update.attemptnr
        attempt = (
            JobAttempt.objects.select_for_update()
            .filter(
                job_id=update.pandaid,
                attemptnr=n,
                jobstatus=JobStatus.FAILED,
                jobdispatchererrorcode=EC_LOST_HEARTBEAT,
            )
            .first()
        )
        if attempt is None or (queues is not None and attempt.queue not in queues):
            return None
        require = Queue.objects.filter(name=attempt.queue).values_list("require_lease", flat=True).first()
        if not lease_matches(attempt.lease, require, update.lease):
            return None
        _reconcile(update, attempt, previous=job["jobstatus"], previous_attempt=job["attemptnr"])
        _task_reopen(job["task_id"], job["workflow_id"])
        # The failure may have ended the workflow's last jobs and released its final jobs; they
        # wait again for the descendants brought back (services.final_jobs).
        final_jobs_hold(job["workflow_id"])
    return UpdateReply(command=None, status=JobStatus.FINISHED, note="reconciled from a late report")


def _waiting(jobs: QuerySet[Job], update: PilotUpdate) -> dict[str, Any] | None:
    """The job's row if it is at the report's attempt and failed, or one attempt later and not
    dispatched yet; else None."""
    n = update.attemptnr
    job = (
        jobs.filter(pandaid=update.pandaid).values("jobstatus", "attemptnr", "task_id", "workflow_id").first()
    )
    if job is None or not (
        (job["attemptnr"] == n and job["jobstatus"] == JobStatus.FAILED)
        or (job["attemptnr"] == n + 1 and job["jobstatus"] in _WAITING_FOR_RETRY)
    ):
        return None
    return dict(job)


def _reconcile(update: PilotUpdate, attempt: JobAttempt, *, previous: str, previous_attempt: int) -> None:
    unknown = set(update.errors) - ERROR_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    now = timezone.now()
    endtime = update.endtime or now
    starttime = attempt.starttime or update.starttime or endtime
    # A finished attempt's errors are what its pilot reported; the watcher's code goes.
    errors: dict[str, Any] = {k: (0 if k.endswith("code") else "") for k in ERROR_FIELDS}
    errors.update(
        {
            k: (str(v)[:DIAG_MAX] if k.endswith("diag") else v)
            for k, v in update.errors.items()
            if v is not None
        }
    )
    metrics = {k: update.metrics[k] for k in METRIC_NAMES if update.metrics.get(k) is not None}
    node = attempt.node or update.node[:128]
    pilot_id = attempt.pilot_id or update.pilot_id[:200]

    for name, value in errors.items():
        setattr(attempt, name, value)
    for name in _ATTEMPT_METRICS:
        if name in metrics:
            setattr(attempt, name, metrics[name])
    attempt.jobstatus = JobStatus.FINISHED
    attempt.node, attempt.pilot_id = node, pilot_id
    attempt.starttime, attempt.endtime = starttime, endtime
    attempt.walltime_s = (endtime - starttime).total_seconds()
    attempt.retry_action = attempt.retry_reason = ""
    lease, attempt.lease = attempt.lease, ""  # a finished attempt keeps no lease
    attempt.save()

    n = attempt.attemptnr
    queue_id = attempt.queue if Queue.objects.filter(name=attempt.queue).exists() else None
    cause = (
        f"pilot reported finished for attempt {n} after the watcher failed it (lost heartbeat); "
        "reconciled from a late report"
    )
    job_transition(
        pandaid=attempt.job_id,
        to=JobStatus.FINISHED,
        cause=cause,
        expect=previous,
        attemptnr=previous_attempt,
        fields={
            "attemptnr": n,
            "queue_id": queue_id,
            "lease": lease,
            "node": node,
            "pilot_id": pilot_id,
            "worker_id": attempt.worker_id,
            "dispatched_at": attempt.dispatched_at,
            "starttime": starttime,
            "endtime": endtime,
            "request_memory_mb": attempt.request_memory_mb,
            "retry_after": None,
            **errors,
            **metrics,
        },
    )
    unpruned = _descendants_unprune(attempt.job_id) if previous == JobStatus.FAILED else []
    released = job_children_release(attempt.job_id)
    _pending_parents_count(unpruned)
    job = Job.objects.get(pk=attempt.job_id)
    if isinstance(job.data_id, dict) and "members" in job.data_id:
        # A cluster job: its members still waiting finish with it (members failed for good stay so).
        cluster_attempt_settle(
            cluster=job, attemptnr=n, outcome=JobStatus.FINISHED, endtime=job.endtime or endtime
        )
    log.info(
        "job %s attempt %s reconciled finished from a late report",
        attempt.job_id,
        n,
        extra={
            "event": "job.late_report_reconciled",
            "pandaid": attempt.job_id,
            "attemptnr": n,
            "previous": previous,
            "released": released,
            "unpruned": len(unpruned),
        },
    )


def _task_reopen(task_id: int, workflow_id: int) -> None:
    """A task or workflow the rollup had ended (done, finished, failed) is derived again from its
    new counts: back to running until the next rollup; aborted and cancelled ones stay."""
    now = timezone.now()
    Task.objects.filter(pk=task_id, status__in=_REOPENED_TASK).update(
        status=TaskStatus.RUNNING, ended_at=None, modified_at=now
    )
    Workflow.objects.filter(pk=workflow_id, status__in=_REOPENED_WORKFLOW).update(
        status=WorkflowStatus.RUNNING, ended_at=None, modified_at=now
    )


def _descendants_unprune(pandaid: int) -> list[int]:
    """Bring back to `defined` the descendants pruned because `pandaid` failed for good, keeping
    pruned those with another parent that failed, was cancelled or stays pruned."""
    kept = set(job_descendants([pandaid], jobstatus=JobStatus.PRUNED))
    if not kept:
        return []
    edges = list(JobDependency.objects.filter(child_id__in=kept).values_list("child_id", "parent_id"))
    status = dict(Job.objects.filter(pandaid__in={p for _, p in edges}).values_list("pandaid", "jobstatus"))
    changed = True
    while changed:
        changed = False
        for child, parent in edges:
            if child in kept and parent != pandaid and parent not in kept and status.get(parent) in _BLOCKING:
                kept.discard(child)
                changed = True
    if not kept:
        return []
    return jobs_transition_bulk(
        source=JobStatus.PRUNED,
        to=JobStatus.DEFINED,
        cause=f"parent {pandaid} finished (reconciled from a late report)",
        pandaids=sorted(kept),
        fields={"queue_id": None, "lease": ""},
    )


def _pending_parents_count(pandaids: list[int]) -> None:
    """`pending_parents` := the number of unfinished parents, for jobs brought back from pruned."""
    if not pandaids:
        return
    unfinished = (
        JobDependency.objects.filter(child_id=OuterRef("pandaid"))
        .exclude(parent__jobstatus=JobStatus.FINISHED)
        .order_by()
        .values("child_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    Job.objects.filter(pandaid__in=pandaids).update(
        pending_parents=Coalesce(Subquery(unfinished, output_field=IntegerField()), Value(0))
    )
