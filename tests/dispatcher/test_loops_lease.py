"""The brokerage loop run as Celery and run_loops run it (`config.loops`): under its lease, once
per job however many runners start at the same moment."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from config.loops import loop_named
from core.leases import lease_acquire
from core.models import LoopStatus
from dispatcher.models import Job, JobStatusLog
from tests.factories import JobFactory, QueueFactory


@pytest.mark.django_db
def test_the_brokerage_loop_does_nothing_while_its_lease_is_held_elsewhere() -> None:
    QueueFactory(max_rss_mb=8000)
    job = JobFactory()
    assert lease_acquire(name="loop:brokerage", holder="other-worker", ttl_s=60)

    assert loop_named("brokerage").run() is None
    assert Job.objects.get(pk=job.pk).jobstatus == "defined"


@pytest.mark.django_db
def test_a_brokerage_run_repeats_its_bounded_step_and_is_recorded() -> None:
    QueueFactory(max_rss_mb=8000)
    jobs = [JobFactory() for _ in range(5)]

    assert loop_named("brokerage").run(limit=2) == 5

    assert Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="activated").count() == 5
    # 2, 2, then 1: less than its limit, so nothing is left and the run ends
    assert LoopStatus.objects.values_list("name", "done", "steps").get() == ("brokerage", 5, 3)


@pytest.mark.django_db
def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown loop 'brokrage'; the loops are brokerage, watcher"):
        loop_named("brokrage")


@pytest.mark.django_db(transaction=True)
def test_the_same_loop_started_twice_at_once_activates_each_job_once(postgres_only: None) -> None:
    QueueFactory(max_rss_mb=8000)
    jobs = [JobFactory() for _ in range(200)]
    results: list[int | None] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            results.append(loop_named("brokerage").run())
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
