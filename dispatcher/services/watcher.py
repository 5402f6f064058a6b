"""The write of the `watcher` loop (`dispatcher.loops.watcher_one_batch`): a silent job's attempt
ends failed, with the jobdispatcher code; the retrier decides whether it comes back."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Q

from dispatcher.models import Job
from dispatcher.services.attempts import jobs_attempt_fail

# jobdispatchererrorcode values the watcher sets (PanDA's EC_* of jobdispatcher/Watcher.py).
EC_LOST_HEARTBEAT = 100
EC_SEND_TIMEOUT = 102
EC_HOLDING_TIMEOUT = 103


@transaction.atomic
def jobs_fail_silent(*, silence: Q, code: int, diag: str, now: dt.datetime, limit: int) -> int:
    """End as failed, with the jobdispatcher `code` and `diag`, the attempts of up to `limit` jobs
    matching `silence`, longest in their state first; returns how many.

    One statement selects and locks them (`FOR UPDATE OF` the job alone: `silence` may join the
    queue, and PostgreSQL refuses to lock the nullable side of that outer join). A row another
    transaction holds right now (a pilot's update) is skipped for the next step rather than waited
    for; a row changed since the statement's snapshot is locked in its latest version and
    `silence` checked again on it, so a job whose heartbeat was committed meanwhile is left out.
    `attempts.jobs_attempt_fail` ends the lot set-based; the retrier decides in the same
    transaction which come back.
    """
    jobs = list(
        Job.objects.filter(silence)
        .select_for_update(of=("self",), skip_locked=True)
        .order_by("statechangetime", "pandaid")[:limit]
    )
    outcomes = jobs_attempt_fail(
        jobs,
        cause=f"watcher: {diag}",
        errors={"jobdispatchererrorcode": code, "jobdispatchererrordiag": diag},
        endtime=now,
    )
    return len(outcomes)
