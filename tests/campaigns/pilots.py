"""A stand-in for pilots until the pilot protocol lands: drive released jobs through the dispatcher
services (`job_transition`, `job_attempt_end`) exactly as the protocol will."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from django.utils import timezone

from dispatcher.models import Job
from dispatcher.services import job_attempt_end, job_transition

Outcome = tuple[str, dict[str, Any]]  # ("finished" | "failed", error columns)
OK: Outcome = ("finished", {})
OOM: Outcome = (
    "failed",
    {"exeerrorcode": 137, "exeerrordiag": "Killed: out of memory (rss 2101 MB > 2000 MB)"},
)
BAD: Outcome = ("failed", {"exeerrorcode": 65, "exeerrordiag": "ValueError: bad input in /data/raw/123.fits"})


def pilots_run(
    *,
    queue: str,
    workflow_ids: Iterable[int],
    outcome: Callable[[Job], Outcome] = lambda job: OK,
    runtime_s: float = 60.0,
    labels: set[str] | None = None,
) -> int:
    """Run every released job of the workflows to its end, wave after wave; returns jobs run."""
    ran = 0
    ids = list(workflow_ids)
    while True:
        selection = Job.objects.filter(workflow_id__in=ids, jobstatus="defined", pending_parents=0)
        if labels is not None:
            selection = selection.filter(label__in=labels)
        ready = list(selection.order_by("pandaid"))
        if not ready:
            return ran
        for job in ready:
            start = timezone.now() - dt.timedelta(seconds=runtime_s)
            job_transition(
                pandaid=job.pandaid, to="activated", cause="test brokerage", fields={"queue_id": queue}
            )
            job_transition(
                pandaid=job.pandaid, to="sent", cause="test getJob", fields={"dispatched_at": start}
            )
            job_transition(pandaid=job.pandaid, to="running", cause="test pilot", fields={"starttime": start})
            status, errors = outcome(job)
            job_attempt_end(
                pandaid=job.pandaid,
                attemptnr=job.attemptnr,
                status=status,
                cause="test pilot final update",
                errors=errors,
                metrics={"max_rss_kb": 1_000_000},
            )
            ran += 1
