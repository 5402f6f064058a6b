"""A stand-in for brokerage and pilots, for workflow tests.

Released jobs go through the real transition service to `running`, and each attempt ends through
the real `job_attempt_end`: it writes the JobAttempt row, releases the children of a finished job
and prunes everything below a job that failed for good. Tests then read attempt rows to see what
ran, and how often.
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils import timezone

from dispatcher.models import Job, Queue
from dispatcher.services import job_transition
from dispatcher.services.attempts import job_attempt_end
from dispatcher.states import JobStatus


def run_released(workflow_id: int, queue: Queue, outcome: Callable[[Job], str]) -> int:
    """Run every released job of the workflow once; `outcome(job)` says finished or failed.
    Returns how many jobs ran. Call repeatedly until it returns 0 to drain the DAG."""
    released = list(
        Job.objects.filter(workflow_id=workflow_id, jobstatus=JobStatus.DEFINED, pending_parents=0).order_by(
            "pandaid"
        )
    )
    for job in released:
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
        errors = {"exeerrorcode": 1, "exeerrordiag": "test failure"} if final == JobStatus.FAILED else {}
        result = job_attempt_end(
            pandaid=job.pandaid, attemptnr=job.attemptnr, status=final, cause="test pilot", errors=errors
        )
        assert result is not None
        assert result.status == final  # no retry rules: a failure is final
    return len(released)


def drain(workflow_id: int, queue: Queue, outcome: Callable[[Job], str]) -> None:
    while run_released(workflow_id, queue, outcome):
        pass
