from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from core.leases import lease_acquire
from core.models import Lease
from dispatcher.loops import loop_run
from dispatcher.models import Job, JobStatusLog
from tests.factories import JobFactory, QueueFactory


@pytest.mark.django_db
def test_a_loop_whose_lease_is_held_elsewhere_does_nothing() -> None:
    QueueFactory(max_rss_mb=8000)
    job = JobFactory()
    assert lease_acquire(name="loop:brokerage", holder="other-worker", ttl_s=60)

    assert loop_run(name="brokerage") is None
    assert Job.objects.get(pk=job.pk).jobstatus == "defined"


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over_and_released_after_the_step() -> None:
    QueueFactory(max_rss_mb=8000)
    JobFactory()
    past = timezone.now() - dt.timedelta(minutes=10)
    Lease.objects.create(name="loop:brokerage", holder="dead-worker", acquired_at=past, expires_at=past)

    assert loop_run(name="brokerage") == 1
    assert not Lease.objects.filter(name="loop:brokerage").exists()


@pytest.mark.django_db
def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown loop 'brokrage'"):
        loop_run(name="brokrage")


@pytest.mark.django_db(transaction=True)
def test_the_same_loop_started_twice_at_once_activates_each_job_once(postgres_only: None) -> None:
    QueueFactory(max_rss_mb=8000)
    jobs = [JobFactory() for _ in range(200)]
    results: list[int | None] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            results.append(loop_run(name="brokerage"))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r or 0 for r in results) == 200
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="activated").count() == 200
    assert JobStatusLog.objects.filter(jobstatus="activated").count() == 200


@pytest.mark.django_db
def test_a_run_repeats_its_bounded_step_until_the_work_is_done() -> None:
    QueueFactory(max_rss_mb=8000)
    jobs = [JobFactory() for _ in range(5)]

    assert loop_run(name="brokerage", limit=2) == 5

    assert Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="activated").count() == 5
    assert JobStatusLog.objects.filter(jobstatus="activated").count() == 5


@pytest.mark.django_db
def test_a_run_stops_when_its_time_budget_is_used_up() -> None:
    QueueFactory(max_rss_mb=8000)
    for _ in range(5):
        JobFactory()

    assert loop_run(name="brokerage", limit=2, budget_s=0) == 2
