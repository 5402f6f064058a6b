"""The end of an attempt, in one transaction (docs/architecture.md "Hot paths"): the JobAttempt
row, the job's new state, counters, DAG release of the children or pruning of the descendants, and
the retry decision. Called by the pilots' final update (`pilot_calls.final_update`: a failed
attempt, and every attempt on SQLite) and by the watcher.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, JobDependency, Queue, QueueStatus, Task
from dispatcher.retry import ERROR_FIELDS, ResizePolicy, RetryDecision, Rule, retry_decide, retry_rules_active
from dispatcher.services.clusters import cluster_attempt_settle
from dispatcher.services.release import descendants_prune, job_children_release
from dispatcher.services.transitions import job_transition, jobs_transition_bulk
from dispatcher.states import JOB_ACTIVE, JobStatus

log = logging.getLogger(__name__)

# Measurements a pilot reports, stored on the job row and copied to the attempt.
METRIC_FIELDS = frozenset({"cpu_time_s", "max_rss_kb", "max_pss_kb", "actual_cores"})
DIAG_MAX = 500  # characters kept of an error diag (the columns are 500 wide)


@dataclass(frozen=True)
class AttemptOutcome:
    pandaid: int
    attemptnr: int
    status: str  # the job's status after this call: finished, failed or defined (retry)
    decision: RetryDecision | None
    released: int  # children whose last pending parent this was
    pruned: int  # descendants pruned because this job failed for good


def _clean(values: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    return {k: (str(v)[:DIAG_MAX] if k.endswith("diag") else v) for k, v in values.items()}


@transaction.atomic
def job_attempt_end(
    *,
    pandaid: int,
    attemptnr: int,
    status: str,
    cause: str,
    errors: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    endtime: dt.datetime | None = None,
) -> AttemptOutcome | None:
    """Close the current attempt of a job as `finished` or `failed`.

    Returns None when the job is not in flight at that attempt (a stale pilot, a duplicate final
    update, or a job cancelled meanwhile): nothing is written then. Steps:

    1. Lock the job; check attempt and state.
    2. Write the JobAttempt row with every error family, the metrics and the times.
    3. finished → transition, then release children (pending_parents − 1, one UPDATE).
       failed → ask the retrier; retry → back to `defined` with attemptnr + 1 (and more memory for
       out-of-memory, and no queue so brokerage places it again); no retry → `failed`, and every
       not-yet-final descendant is pruned.
    4. A cluster job's members take their share of the attempt (`clusters.cluster_attempt_settle`).
    """
    if status not in (JobStatus.FINISHED, JobStatus.FAILED):
        raise ValueError(f"an attempt ends finished or failed, not {status!r}")
    errors = _clean(errors or {}, ERROR_FIELDS)
    metrics = _clean(metrics or {}, METRIC_FIELDS)
    now = timezone.now()
    endtime = endtime or now
    job = Job.objects.select_for_update().filter(pandaid=pandaid).first()
    if job is None:
        raise Job.DoesNotExist(f"no job with pandaid {pandaid}")
    if job.attemptnr != attemptnr or job.jobstatus not in JOB_ACTIVE:
        return None
    decision: RetryDecision | None = None
    if status == JobStatus.FAILED:
        task = Task.objects.only("max_attempts", "max_memory_mb").get(pk=job.task_id)
        decision = _decide(job, task, errors, metrics, retry_rules_active())
    JobAttempt.objects.create(**_attempt_fields(job, status, decision, errors, metrics, endtime))
    released = pruned = 0
    if status == JobStatus.FINISHED:
        job_transition(
            pandaid=pandaid,
            to=JobStatus.FINISHED,
            cause=cause,
            fields={"endtime": endtime, **errors, **metrics},
        )
        released = job_children_release(pandaid)
        final = JobStatus.FINISHED
    elif decision is not None and decision.retries:
        job_transition(
            pandaid=pandaid,
            to=JobStatus.DEFINED,
            cause=f"{cause}; {decision.reason}",
            fields=_retry_fields(decision, attemptnr, now),
        )
        final = JobStatus.DEFINED
    else:
        job_transition(
            pandaid=pandaid,
            to=JobStatus.FAILED,
            cause=cause,
            fields={"endtime": endtime, **errors, **metrics},
        )
        pruned = descendants_prune(pandaid, cause=f"parent {pandaid} failed for good")
        final = JobStatus.FAILED
    _cluster_settle(job, final, endtime, errors)
    outcome = AttemptOutcome(
        pandaid=pandaid,
        attemptnr=attemptnr,
        status=final,
        decision=decision,
        released=released,
        pruned=pruned,
    )
    _log_end(job, status, outcome)
    return outcome


@transaction.atomic
def jobs_attempt_fail(
    jobs: Sequence[Job], *, cause: str, errors: Mapping[str, Any], endtime: dt.datetime
) -> list[AttemptOutcome]:
    """End the current attempts of `jobs` as failed with the same `errors`, set-based: what
    `job_attempt_end` does for one failed attempt, in a fixed number of statements for the lot.

    The caller has locked the rows (the watcher: `FOR UPDATE … SKIP LOCKED` with its selection),
    and each is in flight at its `attemptnr`. Steps:

    1. The retrier's decision per job (pure), one task read and one rule read for all.
    2. The JobAttempt rows, one INSERT.
    3. One `jobs_transition_bulk` per (state, next state and fields): the retried jobs back to
       `defined` with attemptnr + 1, the others to `failed`.
    4. The descendants of the jobs failed for good that have any, pruned (per parent, so each
       pruned job names its parent); a cluster job's members settled.
    """
    if not jobs:
        return []
    errors = _clean(errors, ERROR_FIELDS)
    now = timezone.now()
    tasks = Task.objects.only("max_attempts", "max_memory_mb").in_bulk({job.task_id for job in jobs})
    rules = retry_rules_active()
    decisions = {job.pandaid: _decide(job, tasks[job.task_id], errors, {}, rules) for job in jobs}
    JobAttempt.objects.bulk_create(
        [
            JobAttempt(**_attempt_fields(job, JobStatus.FAILED, decisions[job.pandaid], errors, {}, endtime))
            for job in jobs
        ]
    )
    groups: dict[tuple[str, str, str, tuple[tuple[str, Any], ...]], list[int]] = defaultdict(list)
    for job in jobs:
        decision = decisions[job.pandaid]
        to: str
        if decision.retries:
            to, why = JobStatus.DEFINED, f"{cause}; {decision.reason}"
            fields = _retry_fields(decision, job.attemptnr, now)
        else:
            to, why, fields = JobStatus.FAILED, cause, {"endtime": endtime, **errors}
        groups[(job.jobstatus, to, why, tuple(sorted(fields.items())))].append(job.pandaid)
    moved = 0
    for (source, to, why, fields_items), ids in groups.items():
        moved += len(
            jobs_transition_bulk(source=source, to=to, cause=why, pandaids=ids, fields=dict(fields_items))
        )
    if moved != len(jobs):
        # The rows are locked by the caller: a job that did not move was not in flight, and its
        # attempt row must not stay.
        raise RuntimeError(f"{len(jobs) - moved} of {len(jobs)} locked jobs did not move; nothing written")
    failed = [job.pandaid for job in jobs if not decisions[job.pandaid].retries]
    with_children = set(
        JobDependency.objects.filter(parent_id__in=failed).values_list("parent_id", flat=True).distinct()
    )
    outcomes = []
    for job in jobs:
        decision = decisions[job.pandaid]
        final = JobStatus.DEFINED if decision.retries else JobStatus.FAILED
        pruned = (
            descendants_prune(job.pandaid, cause=f"parent {job.pandaid} failed for good")
            if job.pandaid in with_children
            else 0
        )
        _cluster_settle(job, final, endtime, errors)
        outcome = AttemptOutcome(
            pandaid=job.pandaid,
            attemptnr=job.attemptnr,
            status=final,
            decision=decision,
            released=0,
            pruned=pruned,
        )
        _log_end(job, JobStatus.FAILED, outcome)
        outcomes.append(outcome)
    return outcomes


def _decide(
    job: Job, task: Task, errors: Mapping[str, Any], metrics: Mapping[str, Any], rules: list[Rule]
) -> RetryDecision:
    return retry_decide(
        errors=errors,
        rules=rules,
        label=job.label,
        attemptnr=job.attemptnr,
        max_attempts=task.max_attempts,
        memory_mb=job.request_memory_mb,
        max_memory_mb=task.max_memory_mb,
        measured_rss_kb=metrics.get("max_rss_kb", job.max_rss_kb),
        policy=_resize_policy(),
        walltime_s=job.request_walltime_s,
        max_walltime_s=_longest_queue_walltime_s,
    )


def _attempt_fields(
    job: Job,
    status: str,
    decision: RetryDecision | None,
    errors: Mapping[str, Any],
    metrics: Mapping[str, Any],
    endtime: dt.datetime,
) -> dict[str, Any]:
    """The JobAttempt row of the job's current attempt ending `status`."""
    return {
        "job": job,
        "attemptnr": job.attemptnr,
        "jobstatus": status,
        "queue": job.queue_id or "",
        "node": job.node,
        "pilot_id": job.pilot_id,
        "worker_id": job.worker_id,
        "request_memory_mb": job.request_memory_mb,
        "request_cores": job.request_cores,
        "walltime_s": (endtime - job.starttime).total_seconds() if job.starttime else None,
        "dispatched_at": job.dispatched_at,
        "starttime": job.starttime,
        "endtime": endtime,
        "retry_action": decision.action if decision else "",
        "retry_reason": decision.reason[:300] if decision else "",
        # A failed attempt keeps its dispatch's lease: a late `finished` report must echo it
        # (pilot_calls.late_report); a finished one needs none.
        "lease": job.lease if status == JobStatus.FAILED else "",
        **{k: metrics.get(k, getattr(job, k)) for k in METRIC_FIELDS - {"actual_cores"}},
        **errors,
    }


def _retry_fields(decision: RetryDecision, attemptnr: int, now: dt.datetime) -> dict[str, Any]:
    """The job row's fields for its next attempt after a failed one the retrier retries."""
    fields: dict[str, Any] = {
        "attemptnr": attemptnr + 1,
        "queue_id": None,
        "lease": "",
        "pilot_id": "",
        "node": "",
        "worker_id": None,
        "dispatched_at": None,
        "starttime": None,
        "endtime": None,
        "heartbeat_at": None,
        "retry_after": now + dt.timedelta(seconds=decision.backoff_s) if decision.backoff_s else None,
        # The row describes the next attempt; the failed one's errors and measurements live
        # on its JobAttempt.
        **{k: (0 if k.endswith("code") else "") for k in ERROR_FIELDS},
        **dict.fromkeys(METRIC_FIELDS - {"actual_cores"}),
    }
    if decision.memory_mb:
        fields["request_memory_mb"] = decision.memory_mb
    if decision.walltime_s:
        fields["request_walltime_s"] = decision.walltime_s
    if decision.memory_mb or decision.walltime_s:
        fields["request_reason"] = decision.reason[:300]
    return fields


def _cluster_settle(job: Job, final: str, endtime: dt.datetime, errors: Mapping[str, Any]) -> None:
    # A cluster job lists its members in its data id (dag_clusters): other jobs pay no query.
    if (
        isinstance(job.data_id, dict)
        and "members" in job.data_id
        and Job.objects.filter(cluster_id=job.pandaid).exists()
    ):
        cluster_attempt_settle(
            cluster=job, attemptnr=job.attemptnr, outcome=final, endtime=endtime, errors=errors
        )


def _log_end(job: Job, status: str, outcome: AttemptOutcome) -> None:
    log.info(
        "job %s attempt %s ended %s -> %s",
        job.pandaid,
        outcome.attemptnr,
        status,
        outcome.status,
        extra={
            "event": "job.attempt_end",
            "pandaid": job.pandaid,
            "jeditaskid": job.task_id,
            "workflow_id": job.workflow_id,
            "attemptnr": outcome.attemptnr,
            "result": status,
            "job_status": str(outcome.status),
            "retry": outcome.decision.reason if outcome.decision else "",
            "released": outcome.released,
            "pruned": outcome.pruned,
        },
    )


def _resize_policy() -> ResizePolicy:
    return ResizePolicy(
        margin=float(settings.AILURO["OOM_RETRY_MARGIN"]),
        round_mb=int(settings.AILURO["OOM_RETRY_ROUND_MB"]),
        step_mb=int(settings.AILURO["OOM_RETRY_STEP_MB"]),
    )


def _longest_queue_walltime_s() -> int:
    """The longest walltime a queue brokerage may place a job on allows (0: no such queue)."""
    longest = (
        Queue.objects.exclude(status__in=(QueueStatus.BROKEROFF, QueueStatus.OFFLINE))
        .order_by("-max_walltime_s")
        .values_list("max_walltime_s", flat=True)
        .first()
    )
    return int(longest or 0)
