"""The control loops of DESIGN §6 as one-step services.

Each `<loop>_one_batch(...)` does a bounded amount of work and returns how much it did; it is safe to
run twice, concurrently or in a row, because every change it makes is a compare-and-set (a job
transition, `job_attempt_end`'s attempt check) that only one caller can win. `loop_run` wraps one
step in a database lease, so a second worker, a second beat or a Celery redelivery
(`shared/reference/security.md` §4.2) finds the lease taken and does nothing. Celery tasks
(`dispatcher/tasks.py`) and `manage.py run_loops` both call `loop_run`; tests call the steps
directly with an injected clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.leases import lease_acquire, lease_release
from core.models import Lease
from dispatcher.models import Job, JobStatusLog, PayloadLog, Queue, Task, Workflow
from dispatcher.queries import task_state_counts
from dispatcher.services.attempts import job_attempt_end
from dispatcher.services.brokerage import broker_one_batch
from dispatcher.services.transitions import task_counts_fold
from dispatcher.states import (
    JOB_FINAL,
    JOB_NON_FINAL,
    TASK_FINAL,
    WORKFLOW_FINAL,
    JobStatus,
    TaskStatus,
    WorkflowStatus,
    rollup_status,
)

log = logging.getLogger(__name__)

# jobdispatchererrorcode values the watcher sets (PanDA's EC_* of jobdispatcher/Watcher.py).
EC_LOST_HEARTBEAT = 100
EC_SEND_TIMEOUT = 102
EC_HOLDING_TIMEOUT = 103


# --- brokerage --------------------------------------------------------------------------------


def brokerage_one_batch(*, limit: int = 2000, now: dt.datetime | None = None) -> int:
    """Activate released jobs onto a fitting queue; returns how many were activated.

    The ranking and placement are the dispatcher's (`dispatcher.services.brokerage`); an
    out-of-memory retry comes back `defined` with no queue and the raised memory, and lands here on
    a queue whose memory range fits. `now` is accepted for symmetry with the other loops; brokerage
    reads the clock itself for backoffs.
    """
    return broker_one_batch(limit=limit)


# --- watcher ----------------------------------------------------------------------------------


def _stale(field: str, cutoff: dt.datetime) -> Q:
    """Last contact before `cutoff`: the heartbeat, or the state change when none came yet."""
    return Q(**{f"{field}__lt": cutoff}) | Q(**{f"{field}__isnull": True, "statechangetime__lt": cutoff})


def _watcher_rules(now: dt.datetime) -> list[tuple[Q, int, str]]:
    """(selection, error code, diag) for each kind of silence, per-queue heartbeat timeouts included.

    Queues with their own heartbeat timeout are grouped by value, so the number of OR branches is the
    number of distinct timeouts, not of queues.
    """
    cfg = settings.AILURO
    sent_s = int(cfg["SENT_TIMEOUT_S"])
    holding_s = int(cfg["HOLDING_TIMEOUT_S"])
    default_s = int(cfg["DEFAULT_HEARTBEAT_TIMEOUT_S"])
    rules: list[tuple[Q, int, str]] = [
        (
            Q(jobstatus=JobStatus.SENT, statechangetime__lt=now - dt.timedelta(seconds=sent_s)),
            EC_SEND_TIMEOUT,
            f"sent to a pilot but no reply for {sent_s} s",
        ),
        (
            Q(jobstatus=JobStatus.HOLDING, statechangetime__lt=now - dt.timedelta(seconds=holding_s)),
            EC_HOLDING_TIMEOUT,
            f"holding for more than {holding_s} s",
        ),
    ]
    running = Q(jobstatus__in=[JobStatus.STARTING, JobStatus.RUNNING])
    timeouts = set(
        Queue.objects.filter(heartbeat_timeout_s__isnull=False).values_list("heartbeat_timeout_s", flat=True)
    )
    for timeout in sorted(t for t in timeouts if t is not None):
        cutoff = now - dt.timedelta(seconds=timeout)
        rules.append(
            (
                running & Q(queue__heartbeat_timeout_s=timeout) & _stale("heartbeat_at", cutoff),
                EC_LOST_HEARTBEAT,
                f"lost heartbeat: none for {timeout} s",
            )
        )
    cutoff = now - dt.timedelta(seconds=default_s)
    rules.append(
        (
            running
            & (Q(queue__isnull=True) | Q(queue__heartbeat_timeout_s__isnull=True))
            & _stale("heartbeat_at", cutoff),
            EC_LOST_HEARTBEAT,
            f"lost heartbeat: none for {default_s} s",
        )
    )
    return rules


def watcher_one_batch(*, limit: int = 500, now: dt.datetime | None = None) -> int:
    """Fail the attempts of silent jobs through `job_attempt_end`; returns how many were failed.

    1. For each kind of silence (sent without reply, lost heartbeat per queue, holding too long),
       select up to `limit` candidates in pandaid order, without locks.
    2. For each: lock the row and check it is still the same attempt, in the same state, and still
       silent (a heartbeat may have arrived meanwhile); then end the attempt as failed with the
       jobdispatcher code. The retrier decides inside the same transaction whether it comes back.
    """
    now = now or timezone.now()
    failed = 0
    for selection, code, diag in _watcher_rules(now):
        if failed >= limit:
            break
        candidates = list(
            Job.objects.filter(selection)
            .order_by("pandaid")
            .values_list("pandaid", "attemptnr", "jobstatus")[: limit - failed]
        )
        for pandaid, attemptnr, status in candidates:
            if _watcher_fail(pandaid, attemptnr, status, selection, code, diag, now):
                failed += 1
    return failed


@transaction.atomic
def _watcher_fail(
    pandaid: int, attemptnr: int, status: str, selection: Q, code: int, diag: str, now: dt.datetime
) -> bool:
    # Lock the row alone (the selection may join the queue, and PostgreSQL refuses FOR UPDATE on
    # the nullable side of that outer join), then re-check the selection under the lock.
    list(Job.objects.select_for_update().filter(pandaid=pandaid).values_list("pandaid"))
    still = Job.objects.filter(selection, pandaid=pandaid, attemptnr=attemptnr, jobstatus=status).exists()
    if not still:
        return False
    outcome = job_attempt_end(
        pandaid=pandaid,
        attemptnr=attemptnr,
        status=JobStatus.FAILED,
        cause=f"watcher: {diag}",
        errors={"jobdispatchererrorcode": code, "jobdispatchererrordiag": diag},
        endtime=now,
    )
    return outcome is not None


# --- rollup -----------------------------------------------------------------------------------

_WORKFLOW_OF_TASK = {
    TaskStatus.READY: WorkflowStatus.SUBMITTED,
    TaskStatus.RUNNING: WorkflowStatus.RUNNING,
    TaskStatus.DONE: WorkflowStatus.DONE,
    TaskStatus.FINISHED: WorkflowStatus.FINISHED,
    TaskStatus.FAILED: WorkflowStatus.FAILED,
    TaskStatus.ABORTED: WorkflowStatus.CANCELLED,
}


def task_status_derive(current: str, counts: dict[str, int]) -> str:
    """A task's next status from its exact counts; pure. A paused task stays paused while it has
    unfinished jobs, and an aborted one stays aborted (both are operators' decisions, not the
    counters'; a restart sets the status itself)."""
    if current == TaskStatus.ABORTED:
        return current
    derived = rollup_status(counts)
    if current == TaskStatus.PAUSED and derived not in TASK_FINAL:
        return current
    return derived


def workflow_status_derive(current: str, counts: dict[str, int]) -> str:
    """A workflow's next status from the exact counts of all its jobs; pure. Same JEDI semantics as a
    task; aborted (every job cancelled) reads `cancelled` for a workflow."""
    derived = _WORKFLOW_OF_TASK[TaskStatus(rollup_status(counts))]
    if current == WorkflowStatus.PAUSED and derived not in WORKFLOW_FINAL:
        return current
    return derived


def rollup_one_batch(*, limit: int = 2000, now: dt.datetime | None = None) -> int:
    """Fold the counter deltas, then derive task and workflow states; returns folded deltas plus
    status changes.

    1. `task_counts_fold` (bounded by its own batch).
    2. Candidate tasks: every unfinished task, plus finished ones that have unfinished jobs again (a
       restart), least recently rolled-up first, at most `limit`.
    3. Each task's status from exact counts (`task_state_counts`); a changed status is written with
       a conditional UPDATE on the old value, so a concurrent rollup or operator action wins cleanly.
    4. The same for the candidates' workflows, from the sum of their tasks' counts.
    """
    now = now or timezone.now()
    done = task_counts_fold()
    reopened = Task.objects.filter(
        status__in=TASK_FINAL, counts__jobstatus__in=JOB_NON_FINAL, counts__count__gt=0
    ).values("jeditaskid")
    candidates = list(
        Task.objects.filter(Q(status__in=[s for s in TaskStatus if s not in TASK_FINAL]) | Q(pk__in=reopened))
        .order_by("modified_at", "jeditaskid")
        .values_list("jeditaskid", "status", "workflow_id")[:limit]
    )
    if not candidates:
        return done
    counts = task_state_counts([task_id for task_id, _, _ in candidates])
    unchanged: list[int] = []
    per_workflow: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for task_id, current, workflow_id in candidates:
        new = task_status_derive(current, counts[task_id])
        if new == current:
            unchanged.append(task_id)
        else:
            done += Task.objects.filter(pk=task_id, status=current).update(
                status=new, modified_at=now, ended_at=now if new in TASK_FINAL else None
            )
        per_workflow[workflow_id] = defaultdict(int)
    if unchanged:
        # Moves the examined tasks to the back of the round robin of step 2.
        Task.objects.filter(pk__in=unchanged).update(modified_at=now)
    workflow_tasks = defaultdict(list)
    for task_id, workflow_id in Task.objects.filter(workflow_id__in=per_workflow).values_list(
        "jeditaskid", "workflow_id"
    ):
        workflow_tasks[workflow_id].append(task_id)
    all_counts = task_state_counts([t for ids in workflow_tasks.values() for t in ids])
    for workflow_id, task_ids in workflow_tasks.items():
        for task_id in task_ids:
            for status, n in all_counts[task_id].items():
                per_workflow[workflow_id][status] += n
    for workflow_id, current in Workflow.objects.filter(pk__in=per_workflow).values_list("pk", "status"):
        if current == WorkflowStatus.CANCELLED:
            continue  # a cancel is final even while its jobs are still being cancelled
        new = workflow_status_derive(current, dict(per_workflow[workflow_id]))
        if new != current:
            done += Workflow.objects.filter(pk=workflow_id, status=current).update(
                status=new, modified_at=now, ended_at=now if new in WORKFLOW_FINAL else None
            )
    return done


# --- janitor ----------------------------------------------------------------------------------


def janitor_one_batch(*, limit: int = 5000, now: dt.datetime | None = None) -> int:
    """Housekeeping; returns rows changed or deleted.

    ailuro never moves job rows between tables (PanDA's jobsActive4 → jobsArchived4): the hot paths
    read partial indexes over unfinished jobs, so a final job costs them nothing where it is.
    *Archiving* a final job here means dropping what only mattered while it ran:

    1. its dispatch lease token is cleared (no pilot can ever match it again);
    2. once it has been final for `ARCHIVE_AFTER_DAYS`, its JobStatusLog rows are deleted — the
       JobAttempt rows (errors, metrics, retry decisions: the retry chain) and the job row stay;
    3. payload logs of jobs final for `PAYLOAD_LOG_RETENTION_DAYS` are deleted;
    4. leases expired for more than an hour are deleted (a crashed holder's row).

    Each step is bounded by `limit` rows; the next run continues.
    """
    now = now or timezone.now()
    cfg = settings.AILURO
    final = list(JOB_FINAL)
    done = 0
    ids = list(Job.objects.filter(jobstatus__in=final).exclude(lease="").values_list("pk", flat=True)[:limit])
    if ids:
        done += Job.objects.filter(pk__in=ids, jobstatus__in=final).update(lease="")
    archive_before = now - dt.timedelta(days=int(cfg["ARCHIVE_AFTER_DAYS"]))
    old_jobs = Job.objects.filter(jobstatus__in=final, statechangetime__lt=archive_before)
    log_ids = list(JobStatusLog.objects.filter(job__in=old_jobs).values_list("pk", flat=True)[:limit])
    if log_ids:
        done += JobStatusLog.objects.filter(pk__in=log_ids).delete()[0]
    trim_before = now - dt.timedelta(days=int(cfg["PAYLOAD_LOG_RETENTION_DAYS"]))
    trim_jobs = Job.objects.filter(jobstatus__in=final, statechangetime__lt=trim_before)
    chunk_ids = list(PayloadLog.objects.filter(job__in=trim_jobs).values_list("pk", flat=True)[:limit])
    if chunk_ids:
        done += PayloadLog.objects.filter(pk__in=chunk_ids).delete()[0]
    done += Lease.objects.filter(expires_at__lt=now - dt.timedelta(hours=1)).delete()[0]
    return done


# --- running one step under a lease -----------------------------------------------------------

LOOPS: dict[str, Callable[..., int]] = {
    "brokerage": brokerage_one_batch,
    "watcher": watcher_one_batch,
    "rollup": rollup_one_batch,
    "janitor": janitor_one_batch,
}


def loop_holder() -> str:
    """Who runs this step: host, process and a random tag (two threads of one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# A run repeats its loop's step while the step finds work, for at most this long: a 5 s beat period
# with a 2,000-job step would otherwise cap brokerage at 400 jobs/s. Well below the tasks' soft time
# limit (dispatcher/tasks.py) and the lease's lifetime.
LOOP_BUDGET_S = 20.0


def loop_run(*, name: str, budget_s: float = LOOP_BUDGET_S, **kwargs: Any) -> int | None:
    """Run the loop `name` if its lease is free: its step, again while the last step did something
    and `budget_s` is not used up. Returns the total count, or None when another runner holds the
    lease (a duplicate delivery or a second beat).

    The lease outlives the hard time limit of the Celery task, so a run that is still going is never
    joined by a second one; a holder that died releases it by expiry.
    """
    if name not in LOOPS:
        raise ValueError(f"unknown loop {name!r}; the loops are {', '.join(sorted(LOOPS))}")
    holder = loop_holder()
    lease = f"loop:{name}"
    ttl = float(getattr(settings, "CELERY_TASK_TIME_LIMIT", 180)) + 30
    if not lease_acquire(name=lease, holder=holder, ttl_s=ttl):
        log.info("loop %s: lease held elsewhere", name, extra={"event": "loop.skipped", "loop": name})
        return None
    total = steps = 0
    deadline = time.monotonic() + budget_s
    try:
        while True:
            done = LOOPS[name](**kwargs)
            total += done
            steps += 1
            if done == 0 or time.monotonic() >= deadline:
                break
    finally:
        lease_release(name=lease, holder=holder)
    log.info(
        "loop %s did %d in %d step(s)",
        name,
        total,
        steps,
        extra={"event": "loop.ran", "loop": name, "done": total, "steps": steps},
    )
    return total
