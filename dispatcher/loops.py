"""The dispatcher's loop steps; `config/loops.py` is the table that runs them (periods, leases,
limits; docs/architecture.md#loops).

Each `<loop>_one_batch(...)` does a bounded amount of work and returns how much it did; it is safe to
run twice, concurrently or in a row, because every change it makes is a compare-and-set (a job
transition, or an attempt ended under its row lock) that only one caller can win. A step chooses
what to look at; the writes are services (`dispatcher.services`). The brokerage step is the service
`broker_one_batch` itself. Tests call the steps directly with an injected clock.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core.leases import leases_expired_delete
from dispatcher.models import Queue
from dispatcher.services.archive import archive_step
from dispatcher.services.budgets import failure_budgets_check
from dispatcher.services.janitor import jobs_archive, payload_logs_trim
from dispatcher.services.learning import requests_learn
from dispatcher.services.rollup import statuses_rollup
from dispatcher.services.transitions import queue_counts_fold, task_counts_fold
from dispatcher.services.watcher import (
    EC_HOLDING_TIMEOUT,
    EC_LOST_HEARTBEAT,
    EC_SEND_TIMEOUT,
    jobs_fail_silent,
)
from dispatcher.states import JobStatus

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
    timeouts = set(
        Queue.objects.filter(heartbeat_timeout_s__isnull=False).values_list("heartbeat_timeout_s", flat=True)
    )
    # One rule per state: `jobstatus = x` ordered by state age is a walk of the in-flight index in
    # its own order (`jobstatus IN (…)` is not, and the planner then walks the primary key through
    # the whole table hoping to meet 500 silent jobs early: 23 s at 10M jobs when there are none).
    for state in (JobStatus.STARTING, JobStatus.RUNNING):
        for timeout in sorted(t for t in timeouts if t is not None):
            cutoff = now - dt.timedelta(seconds=timeout)
            rules.append(
                (
                    Q(jobstatus=state, queue__heartbeat_timeout_s=timeout) & _stale("heartbeat_at", cutoff),
                    EC_LOST_HEARTBEAT,
                    f"lost heartbeat: none for {timeout} s",
                )
            )
        cutoff = now - dt.timedelta(seconds=default_s)
        rules.append(
            (
                Q(jobstatus=state)
                & (Q(queue__isnull=True) | Q(queue__heartbeat_timeout_s__isnull=True))
                & _stale("heartbeat_at", cutoff),
                EC_LOST_HEARTBEAT,
                f"lost heartbeat: none for {default_s} s",
            )
        )
    return rules


def watcher_one_batch(*, limit: int = 500, now: dt.datetime | None = None) -> int:
    """End the attempts of silent jobs as failed (`jobs_fail_silent`); returns how many.

    For each kind of silence (sent without reply, lost heartbeat per state and queue timeout,
    holding too long), up to `limit` in all: one transaction selects and locks the silent jobs
    longest in their state first (each selection one state: a walk of the in-flight index), ends
    their attempts as failed with the jobdispatcher code set-based, and lets the retrier decide in
    the same transaction which come back.
    """
    now = now or timezone.now()
    failed = 0
    for selection, code, diag in _watcher_rules(now):
        if failed >= limit:
            break
        failed += jobs_fail_silent(silence=selection, code=code, diag=diag, now=now, limit=limit - failed)
    return failed


# --- rollup -----------------------------------------------------------------------------------


def rollup_one_batch(*, limit: int = 2000, now: dt.datetime | None = None) -> int:
    """Fold the counter deltas (`task_counts_fold` and `queue_counts_fold`, each bounded by its own
    batch), then derive the states of up to `limit` tasks and their workflows (`statuses_rollup`);
    returns folded deltas plus status changes."""
    folded = task_counts_fold() + queue_counts_fold()
    return folded + statuses_rollup(limit=limit, now=now or timezone.now())


# --- janitor ----------------------------------------------------------------------------------


def janitor_one_batch(*, limit: int = 5000, now: dt.datetime | None = None) -> int:
    """Housekeeping; returns rows changed or deleted: final workflows' jobs moved to the archive
    tables and archive partitions past their retention dropped (`archive_step`, bounded by
    JOB_ARCHIVE_BATCH_JOBS), final jobs' leases and old state history cleared (`jobs_archive`), old
    payload logs trimmed (`payload_logs_trim`), leases expired for more than an hour deleted (a
    crashed holder's rows). The other parts are bounded by `limit` rows; the next run continues."""
    now = now or timezone.now()
    done = archive_step(now=now)
    done += jobs_archive(limit=limit, now=now)
    done += payload_logs_trim(limit=limit, now=now)
    return done + leases_expired_delete(before=now - dt.timedelta(hours=1))


# --- budgets and learned requests ----------------------------------------------------------------


def budgets_one_batch(*, now: dt.datetime | None = None) -> int:
    """Pause the tasks over their failure budget (`failure_budgets_check`); returns how many."""
    return failure_budgets_check(now=now or timezone.now())


def requests_one_batch(*, limit: int = 200, now: dt.datetime | None = None) -> int:
    """Learn the requests of up to `limit` opted-in tasks with enough measured attempts
    (`requests_learn`); returns how many jobs' requests moved."""
    return requests_learn(limit=limit, now=now or timezone.now())
