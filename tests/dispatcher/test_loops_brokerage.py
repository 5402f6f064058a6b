from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from dispatcher.loops import brokerage_one_batch
from dispatcher.models import Job
from dispatcher.queries import task_state_counts
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = pytest.mark.django_db


def test_released_jobs_are_activated_on_a_fitting_queue_and_others_wait() -> None:
    QueueFactory(name="MEDIUM", max_rss_mb=8000)
    QueueFactory(name="HIMEM", min_rss_mb=8001, max_rss_mb=16000)
    task = TaskFactory()
    small = JobFactory(task=task, request_memory_mb=4000)
    big = JobFactory(task=task, request_memory_mb=16000)
    blocked = JobFactory(task=task, pending_parents=1)
    backing_off = JobFactory(task=task, retry_after=timezone.now() + dt.timedelta(minutes=1))

    assert brokerage_one_batch() == 2

    assert dict(Job.objects.filter(jobstatus="activated").values_list("pandaid", "queue_id")) == {
        small.pk: "MEDIUM",
        big.pk: "HIMEM",
    }
    assert set(Job.objects.filter(jobstatus="defined").values_list("pandaid", flat=True)) == {
        blocked.pk,
        backing_off.pk,
    }
    assert task_state_counts([task.pk])[task.pk] == {"activated": 2, "defined": 2}
    assert brokerage_one_batch() == 0


def test_an_offline_queue_gets_nothing() -> None:
    QueueFactory(name="DOWN", max_rss_mb=8000, status="offline")
    job = JobFactory(request_memory_mb=1000)

    assert brokerage_one_batch() == 0
    assert Job.objects.get(pk=job.pk).jobstatus == "defined"
