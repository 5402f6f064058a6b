from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from dispatcher.models import Job, JobStatusLog
from dispatcher.queries import task_state_counts
from dispatcher.services import broker_one_batch
from tests.factories import JobFactory, QueueFactory, ResourceTypeFactory, TaskFactory

pytestmark = pytest.mark.django_db


def test_released_jobs_are_activated_on_a_queue_that_fits() -> None:
    small = QueueFactory(name="SMALL", max_rss_mb=1000)
    big = QueueFactory(name="BIG", max_rss_mb=8000)
    task = TaskFactory()
    light = JobFactory(task=task, request_memory_mb=500)
    heavy = JobFactory(task=task, request_memory_mb=6000)

    assert broker_one_batch(limit=100) == 2

    light.refresh_from_db()
    heavy.refresh_from_db()
    assert (heavy.jobstatus, heavy.queue_id) == ("activated", big.name)
    assert light.jobstatus == "activated" and light.queue_id in (small.name, big.name)
    assert JobStatusLog.objects.filter(jobstatus="activated").count() == 2
    assert task_state_counts([task.pk])[task.pk] == {"activated": 2}


def test_jobs_with_pending_parents_or_backoff_wait() -> None:
    QueueFactory(name="Q")
    waiting = JobFactory(pending_parents=1)
    backing_off = JobFactory(retry_after=timezone.now() + dt.timedelta(minutes=5))

    assert broker_one_batch(limit=100) == 0
    assert set(
        Job.objects.filter(pk__in=[waiting.pk, backing_off.pk]).values_list("jobstatus", flat=True)
    ) == {"defined"}


def test_a_job_no_queue_can_run_stays_defined_with_a_brokerage_error() -> None:
    QueueFactory(name="Q", max_rss_mb=1000)
    QueueFactory(name="DOWN", status="offline", max_rss_mb=99999)
    job = JobFactory(request_memory_mb=5000)

    assert broker_one_batch(limit=100) == 0

    job.refresh_from_db()
    assert job.jobstatus == "defined" and job.queue_id is None
    assert job.brokerageerrorcode == 100
    assert job.brokerageerrordiag == "no queue can run this job: Q runs up to 1000 MB, job needs 5000 MB"
    assert job.retry_after is not None


def test_a_queue_restricted_to_resource_types_gets_only_those() -> None:
    mcore = ResourceTypeFactory(name="MCORE", min_cores=2, max_cores=None)
    ResourceTypeFactory(name="SCORE", min_cores=1, max_cores=1)
    queue = QueueFactory(name="MC", max_cores=8)
    queue.resource_types.add(mcore)
    multi = JobFactory(request_cores=4)
    single = JobFactory(request_cores=1)

    assert broker_one_batch(limit=100) == 1

    assert Job.objects.get(pk=multi.pk).resource_type == "MCORE"
    assert Job.objects.get(pk=single.pk).jobstatus == "defined"


def test_the_batch_limit_is_respected() -> None:
    QueueFactory(name="Q")
    task = TaskFactory()
    for _ in range(5):
        JobFactory(task=task)

    assert broker_one_batch(limit=3) == 3
    assert broker_one_batch(limit=3) == 2
    assert broker_one_batch(limit=3) == 0


def test_released_jobs_are_activated_on_a_fitting_queue_and_others_wait() -> None:
    QueueFactory(name="MEDIUM", max_rss_mb=8000)
    QueueFactory(name="HIMEM", min_rss_mb=8001, max_rss_mb=16000)
    task = TaskFactory()
    small = JobFactory(task=task, request_memory_mb=4000)
    big = JobFactory(task=task, request_memory_mb=16000)
    blocked = JobFactory(task=task, pending_parents=1)
    backing_off = JobFactory(task=task, retry_after=timezone.now() + dt.timedelta(minutes=1))

    assert broker_one_batch() == 2

    assert dict(Job.objects.filter(jobstatus="activated").values_list("pandaid", "queue_id")) == {
        small.pk: "MEDIUM",
        big.pk: "HIMEM",
    }
    assert set(Job.objects.filter(jobstatus="defined").values_list("pandaid", flat=True)) == {
        blocked.pk,
        backing_off.pk,
    }
    assert task_state_counts([task.pk])[task.pk] == {"activated": 2, "defined": 2}
    assert broker_one_batch() == 0


def test_an_offline_queue_gets_nothing() -> None:
    QueueFactory(name="DOWN", max_rss_mb=8000, status="offline")
    job = JobFactory(request_memory_mb=1000)

    assert broker_one_batch() == 0
    assert Job.objects.get(pk=job.pk).jobstatus == "defined"
