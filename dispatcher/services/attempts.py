"""The end of an attempt, in one transaction (docs/architecture.md "Hot paths"): the JobAttempt
row, the job's new state, counters, DAG release of the children or pruning of the descendants, and
the retry decision. Called by the pilots' final update (`pilot_calls.final_update`: a failed
attempt, and every attempt on SQLite) and by the watcher.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, Queue, QueueStatus, Task
from dispatcher.retry import ERROR_FIELDS, ResizePolicy, RetryDecision, retry_decide, retry_rules_active
from dispatcher.services.clusters import cluster_attempt_settle
from dispatcher.services.release import descendants_prune, job_children_release
from dispatcher.services.transitions import job_transition
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
    task = Task.objects.only("max_attempts", "max_memory_mb").get(pk=job.task_id)

    decision: RetryDecision | None = None
    if status == JobStatus.FAILED:
        decision = retry_decide(
            errors=errors,
            rules=retry_rules_active(),
            label=job.label,
            attemptnr=attemptnr,
            max_attempts=task.max_attempts,
            memory_mb=job.request_memory_mb,
            max_memory_mb=task.max_memory_mb,
            measured_rss_kb=metrics.get("max_rss_kb", job.max_rss_kb),
            policy=_resize_policy(),
            walltime_s=job.request_walltime_s,
            max_walltime_s=_longest_queue_walltime_s,
        )
    walltime = (endtime - job.starttime).total_seconds() if job.starttime else None
    JobAttempt.objects.create(
        job=job,
        attemptnr=attemptnr,
        jobstatus=status,
        queue=job.queue_id or "",
        node=job.node,
        pilot_id=job.pilot_id,
        worker_id=job.worker_id,
        request_memory_mb=job.request_memory_mb,
        request_cores=job.request_cores,
        walltime_s=walltime,
        dispatched_at=job.dispatched_at,
        starttime=job.starttime,
        endtime=endtime,
        retry_action=decision.action if decision else "",
        retry_reason=decision.reason[:300] if decision else "",
        # A failed attempt keeps its dispatch's lease: a late `finished` report must echo it
        # (pilot_calls.late_report); a finished one needs none.
        lease=job.lease if status == JobStatus.FAILED else "",
        **{k: metrics.get(k, getattr(job, k)) for k in METRIC_FIELDS - {"actual_cores"}},
        **errors,
    )
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
        job_transition(
            pandaid=pandaid, to=JobStatus.DEFINED, cause=f"{cause}; {decision.reason}", fields=fields
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
    # A cluster job lists its members in its data id (dag_clusters): other jobs pay no query.
    if (
        isinstance(job.data_id, dict)
        and "members" in job.data_id
        and Job.objects.filter(cluster_id=pandaid).exists()
    ):
        cluster_attempt_settle(
            cluster=job, attemptnr=attemptnr, outcome=final, endtime=endtime, errors=errors
        )
    log.info(
        "job %s attempt %s ended %s -> %s",
        pandaid,
        attemptnr,
        status,
        final,
        extra={
            "event": "job.attempt_end",
            "pandaid": pandaid,
            "jeditaskid": job.task_id,
            "workflow_id": job.workflow_id,
            "attemptnr": attemptnr,
            "result": status,
            "job_status": str(final),
            "retry": decision.reason if decision else "",
            "released": released,
            "pruned": pruned,
        },
    )
    return AttemptOutcome(
        pandaid=pandaid,
        attemptnr=attemptnr,
        status=final,
        decision=decision,
        released=released,
        pruned=pruned,
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
