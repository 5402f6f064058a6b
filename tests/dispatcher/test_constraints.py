from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from dispatcher.models import Job, JobDependency, Queue, ResourceType, RetryRule, Task
from dispatcher.states import JobStatus
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory

pytestmark = pytest.mark.django_db


def _violates(name: str, fn: object) -> None:
    with pytest.raises(IntegrityError, match=name), transaction.atomic():
        fn()  # type: ignore[operator]


def test_a_job_status_outside_the_machine_is_rejected_by_the_database() -> None:
    job = JobFactory()
    _violates("job_status_valid", lambda: Job.objects.filter(pk=job.pk).update(jobstatus="exploded"))


def test_an_activated_job_needs_a_queue() -> None:
    job = JobFactory()
    _violates(
        "job_activated_has_queue", lambda: Job.objects.filter(pk=job.pk).update(jobstatus=JobStatus.ACTIVATED)
    )


def test_a_job_with_pending_parents_cannot_be_released() -> None:
    job = JobFactory(pending_parents=2)
    queue = QueueFactory()
    _violates(
        "job_released_without_pending_parents",
        lambda: Job.objects.filter(pk=job.pk).update(jobstatus=JobStatus.ACTIVATED, queue=queue),
    )


def test_attempt_numbers_cores_and_memory_are_positive() -> None:
    job = JobFactory()
    _violates("job_attemptnr_positive", lambda: Job.objects.filter(pk=job.pk).update(attemptnr=0))
    _violates("job_cores_positive", lambda: Job.objects.filter(pk=job.pk).update(request_cores=0))
    _violates("job_memory_positive", lambda: Job.objects.filter(pk=job.pk).update(request_memory_mb=0))


def test_job_names_are_unique_within_a_workflow() -> None:
    job = JobFactory()
    _violates("job_unique_name_in_workflow", lambda: JobFactory(task=job.task, name=job.name))


def test_a_job_cannot_depend_on_itself_or_twice_on_the_same_parent() -> None:
    parent, child = JobFactory(), JobFactory()
    JobDependency.objects.create(parent=parent, child=child)
    _violates("jobdependency_no_self_loop", lambda: JobDependency.objects.create(parent=child, child=child))
    _violates("jobdependency_unique", lambda: JobDependency.objects.create(parent=parent, child=child))


def test_queue_limits_are_consistent() -> None:
    site = SiteFactory()
    _violates("queue_status_valid", lambda: Queue.objects.create(name="Q1", site=site, status="sometimes"))
    _violates(
        "queue_rss_range",
        lambda: Queue.objects.create(name="Q2", site=site, min_rss_mb=9000, max_rss_mb=8000),
    )
    _violates("queue_max_cores_positive", lambda: Queue.objects.create(name="Q3", site=site, max_cores=0))


def test_task_memory_cap_and_attempts() -> None:
    task = TaskFactory()
    _violates(
        "task_memory_cap", lambda: Task.objects.filter(pk=task.pk).update(memory_mb=10, max_memory_mb=5)
    )
    _violates("task_max_attempts_positive", lambda: Task.objects.filter(pk=task.pk).update(max_attempts=0))
    _violates("task_status_valid", lambda: Task.objects.filter(pk=task.pk).update(status="napping"))


def test_resource_type_ranges_and_retry_rule_ranges() -> None:
    _violates(
        "resourcetype_cores_range", lambda: ResourceType.objects.create(name="BAD", min_cores=4, max_cores=2)
    )
    _violates(
        "retryrule_code_range",
        lambda: RetryRule.objects.create(
            name="r", error_family="pilot", code=1200, code_max=1100, action="retry"
        ),
    )
    _violates(
        "retryrule_action_valid",
        lambda: RetryRule.objects.create(name="r2", error_family="pilot", action="pray"),
    )
