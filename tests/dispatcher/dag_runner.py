"""A stand-in for brokerage, pilots and the final-update path, for workflow tests.

It moves released jobs through the real transition service and writes one JobAttempt row per
attempt that ran, as `job_attempt_end` does; a finished job releases its children and a failed
one prunes everything below it. Tests then read attempt rows to see what ran, and how often.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, JobDependency, Queue
from dispatcher.services import job_transition, jobs_transition_bulk
from dispatcher.states import JOB_NON_FINAL, JobStatus


def run_released(workflow_id: int, queue: Queue, outcome: Callable[[Job], str]) -> int:
    """Run every released job of the workflow once; `outcome(job)` says finished or failed.
    Returns how many jobs ran. Call repeatedly until it returns 0 to drain the DAG."""
    ran = 0
    released = list(
        Job.objects.filter(workflow_id=workflow_id, jobstatus=JobStatus.DEFINED, pending_parents=0).order_by(
            "pandaid"
        )
    )
    for job in released:
        with transaction.atomic():
            now = timezone.now()
            job_transition(
                pandaid=job.pandaid,
                to=JobStatus.ACTIVATED,
                cause="test brokerage",
                fields={"queue_id": queue.name},
            )
            job_transition(
                pandaid=job.pandaid, to=JobStatus.SENT, cause="test dispatch", fields={"dispatched_at": now}
            )
            job_transition(
                pandaid=job.pandaid, to=JobStatus.RUNNING, cause="test pilot", fields={"starttime": now}
            )
            final = outcome(job)
            fields = {"endtime": now}
            if final == JobStatus.FAILED:
                fields["exeerrorcode"] = 1
            job_transition(pandaid=job.pandaid, to=final, cause="test pilot", fields=fields)
            JobAttempt.objects.create(
                job_id=job.pandaid,
                attemptnr=job.attemptnr,
                jobstatus=final,
                queue=queue.name,
                request_memory_mb=job.request_memory_mb,
                exeerrorcode=1 if final == JobStatus.FAILED else 0,
                dispatched_at=now,
                starttime=now,
                endtime=now,
            )
            children = JobDependency.objects.filter(parent_id=job.pandaid).values_list("child_id", flat=True)
            if final == JobStatus.FINISHED:
                Job.objects.filter(pandaid__in=list(children), jobstatus=JobStatus.DEFINED).update(
                    pending_parents=F("pending_parents") - 1
                )
            else:
                _prune_below(job.pandaid)
        ran += 1
    return ran


def _prune_below(pandaid: int) -> None:
    frontier = [pandaid]
    while frontier:
        children = list(
            JobDependency.objects.filter(parent_id__in=frontier).values_list("child_id", flat=True)
        )
        if not children:
            return
        for source in JOB_NON_FINAL:
            jobs_transition_bulk(source=source, to=JobStatus.PRUNED, cause="parent failed", pandaids=children)
        frontier = children


def drain(workflow_id: int, queue: Queue, outcome: Callable[[Job], str]) -> None:
    while run_released(workflow_id, queue, outcome):
        pass
