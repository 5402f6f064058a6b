"""The write of the `watcher` loop (`dispatcher.loops.watcher_one_batch`): a silent job's attempt
ends failed, with the jobdispatcher code; the retrier decides whether it comes back."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Q

from dispatcher.models import Job
from dispatcher.services.attempts import job_attempt_end
from dispatcher.states import JobStatus

# jobdispatchererrorcode values the watcher sets (PanDA's EC_* of jobdispatcher/Watcher.py).
EC_LOST_HEARTBEAT = 100
EC_SEND_TIMEOUT = 102
EC_HOLDING_TIMEOUT = 103


@transaction.atomic
def job_fail_silent(
    *, pandaid: int, attemptnr: int, status: str, silence: Q, code: int, diag: str, now: dt.datetime
) -> bool:
    """Fail the job's attempt `attemptnr` if it is still in `status` and still matches `silence`
    under its row lock (a heartbeat may have arrived since it was selected); True when it did.

    The row is locked alone: `silence` may join the queue, and PostgreSQL refuses FOR UPDATE on the
    nullable side of that outer join.
    """
    list(Job.objects.select_for_update().filter(pandaid=pandaid).values_list("pandaid"))
    still = Job.objects.filter(silence, pandaid=pandaid, attemptnr=attemptnr, jobstatus=status).exists()
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
