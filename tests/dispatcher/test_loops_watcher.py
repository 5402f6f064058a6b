from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from dispatcher.loops import watcher_one_batch
from dispatcher.models import Job, JobAttempt
from dispatcher.queries import task_state_counts
from dispatcher.services import job_transition
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_retry_rules")]

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _in_flight(status: str, *, since: dt.datetime, heartbeat: dt.datetime | None = None, **kw: object) -> Job:
    kw.setdefault("queue", QueueFactory())
    return JobFactory(jobstatus=status, statechangetime=since, heartbeat_at=heartbeat, starttime=since, **kw)


def test_a_sent_job_without_reply_for_thirty_minutes_fails_with_102_and_is_retried() -> None:
    stale = _in_flight("sent", since=NOW - dt.timedelta(minutes=31))
    fresh = _in_flight("sent", since=NOW - dt.timedelta(minutes=29))

    assert watcher_one_batch(now=NOW) == 1

    stale.refresh_from_db()
    assert (stale.jobstatus, stale.attemptnr, stale.queue_id) == ("defined", 2, None)
    attempt = JobAttempt.objects.get(job=stale)
    assert (attempt.jobdispatchererrorcode, attempt.retry_action) == (102, "retry")
    assert "sent-no-reply" in attempt.retry_reason
    assert Job.objects.get(pk=fresh.pk).jobstatus == "sent"


def test_a_running_job_silent_beyond_the_default_timeout_is_lost_with_100() -> None:
    lost = _in_flight(
        "running", since=NOW - dt.timedelta(hours=5), heartbeat=NOW - dt.timedelta(hours=2, seconds=1)
    )
    alive = _in_flight("running", since=NOW - dt.timedelta(hours=5), heartbeat=NOW - dt.timedelta(hours=1))

    assert watcher_one_batch(now=NOW) == 1

    attempt = JobAttempt.objects.get(job=lost)
    assert (attempt.jobdispatchererrorcode, attempt.jobdispatchererrordiag) == (
        100,
        "lost heartbeat: none for 7200 s",
    )
    assert Job.objects.get(pk=alive.pk).jobstatus == "running"


def test_the_queue_heartbeat_timeout_overrides_the_default() -> None:
    short = QueueFactory(heartbeat_timeout_s=600)
    lost = _in_flight(
        "running", since=NOW - dt.timedelta(hours=1), heartbeat=NOW - dt.timedelta(minutes=11), queue=short
    )
    default_queue_job = _in_flight(
        "running", since=NOW - dt.timedelta(hours=1), heartbeat=NOW - dt.timedelta(minutes=11)
    )

    assert watcher_one_batch(now=NOW) == 1

    assert JobAttempt.objects.get(job=lost).jobdispatchererrordiag == "lost heartbeat: none for 600 s"
    assert Job.objects.get(pk=default_queue_job.pk).jobstatus == "running"


def test_a_job_that_never_heartbeated_is_judged_by_its_state_change_time() -> None:
    silent = _in_flight("starting", since=NOW - dt.timedelta(hours=3))

    assert watcher_one_batch(now=NOW) == 1
    assert JobAttempt.objects.get(job=silent).jobdispatchererrorcode == 100


def test_holding_beyond_the_holding_timeout_fails_with_103_without_retry() -> None:
    task = TaskFactory()
    held = _in_flight("holding", since=NOW - dt.timedelta(hours=3, seconds=1), task=task)

    assert watcher_one_batch(now=NOW) == 1

    held.refresh_from_db()
    assert held.jobstatus == "failed"
    attempt = JobAttempt.objects.get(job=held)
    assert (attempt.jobdispatchererrorcode, attempt.retry_action) == (103, "no_retry")
    assert task_state_counts([task.pk])[task.pk] == {"failed": 1}


def test_the_third_lost_heartbeat_is_the_last_attempt() -> None:
    job = _in_flight("running", since=NOW - dt.timedelta(hours=3), attemptnr=3)

    watcher_one_batch(now=NOW)

    job.refresh_from_db()
    assert (job.jobstatus, job.attemptnr) == ("failed", 3)
    assert "attempt 3 of 3 was the last" in JobAttempt.objects.get(job=job).retry_reason


@pytest.mark.django_db(transaction=True)
def test_a_job_a_pilot_update_holds_is_skipped_and_its_heartbeat_saves_it(postgres_only: None) -> None:
    """The watcher does not wait for a row another transaction holds (a pilot's heartbeat being
    written): it ends the other silent jobs, and the held one is judged again by the next step,
    where its new heartbeat saves it."""
    held = _in_flight("running", since=NOW - dt.timedelta(hours=3))
    other = _in_flight("running", since=NOW - dt.timedelta(hours=3))
    locked, release = threading.Event(), threading.Event()

    def pilot_update() -> None:
        try:
            with transaction.atomic():
                Job.objects.filter(pk=held.pk).update(heartbeat_at=NOW)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    pilot = threading.Thread(target=pilot_update)
    pilot.start()
    assert locked.wait(10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # waiting for the held row would raise
        assert watcher_one_batch(now=NOW) == 1
    finally:
        release.set()
        pilot.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    assert Job.objects.get(pk=other.pk).jobstatus == "defined"
    assert Job.objects.get(pk=held.pk).jobstatus == "running"
    assert watcher_one_batch(now=NOW) == 0
    assert not JobAttempt.objects.filter(job=held).exists()


def test_running_the_watcher_twice_fails_each_attempt_once() -> None:
    jobs = [_in_flight("running", since=NOW - dt.timedelta(hours=3)) for _ in range(3)]

    assert watcher_one_batch(now=NOW) == 3
    assert watcher_one_batch(now=NOW) == 0

    assert JobAttempt.objects.filter(job__in=jobs).count() == 3


def test_the_watcher_is_bounded_per_run() -> None:
    for _ in range(5):
        _in_flight("running", since=NOW - dt.timedelta(hours=3))

    assert watcher_one_batch(now=NOW, limit=2) == 2
    assert watcher_one_batch(now=NOW, limit=10) == 3


def test_a_retried_job_keeps_its_pandaid_and_the_attempt_chain_reads_in_order() -> None:
    job = _in_flight("running", since=NOW - dt.timedelta(hours=3))
    watcher_one_batch(now=NOW)
    job.refresh_from_db()
    Job.objects.filter(pk=job.pk).update(queue=QueueFactory())
    for status in ("activated", "sent", "running"):
        job_transition(pandaid=job.pk, to=status, cause="test")
    Job.objects.filter(pk=job.pk).update(heartbeat_at=NOW - dt.timedelta(hours=3))

    watcher_one_batch(now=NOW + dt.timedelta(minutes=1))

    chain = list(
        JobAttempt.objects.filter(job=job).order_by("attemptnr").values_list("attemptnr", "retry_action")
    )
    assert chain == [(1, "retry"), (2, "retry")]
    job.refresh_from_db()
    assert (
        job.attemptnr == 3
        and job.retry_after is not None
        and job.retry_after > timezone.now() - dt.timedelta(days=1)
    )
