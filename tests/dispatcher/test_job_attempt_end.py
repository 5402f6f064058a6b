from __future__ import annotations

import pytest
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, JobDependency, RetryRule
from dispatcher.queries import job_descendants, task_state_counts
from dispatcher.services import job_attempt_end
from dispatcher.states import JobStatus
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = pytest.mark.django_db


def _running(**kw: object) -> Job:
    return JobFactory(jobstatus=JobStatus.RUNNING, queue=QueueFactory(), starttime=timezone.now(), **kw)


def _chain(task: object) -> tuple[Job, Job, Job, Job]:
    """parent (running) → child → grandchild, and a second parent of the child that finished."""
    parent = _running(task=task)
    other = JobFactory(task=task, jobstatus=JobStatus.FINISHED)
    child = JobFactory(task=task, pending_parents=2)
    grandchild = JobFactory(task=task, pending_parents=1)
    JobDependency.objects.create(parent=parent, child=child)
    JobDependency.objects.create(parent=other, child=child)
    JobDependency.objects.create(parent=child, child=grandchild)
    Job.objects.filter(pk=child.pk).update(pending_parents=1)  # `other` already finished
    return parent, other, child, grandchild


def test_a_finished_attempt_is_recorded_and_releases_children() -> None:
    task = TaskFactory()
    parent, _, child, grandchild = _chain(task)

    out = job_attempt_end(
        pandaid=parent.pandaid, attemptnr=1, status="finished", cause="pilot", metrics={"max_rss_kb": 123456}
    )

    assert out is not None and (out.status, out.released) == ("finished", 1)
    parent.refresh_from_db()
    child.refresh_from_db()
    assert parent.jobstatus == "finished" and parent.max_rss_kb == 123456
    assert child.pending_parents == 0
    attempt = JobAttempt.objects.get(job=parent)
    assert (attempt.attemptnr, attempt.jobstatus, attempt.max_rss_kb) == (1, "finished", 123456)
    assert Job.objects.get(pk=grandchild.pk).pending_parents == 1


def test_a_failure_without_retry_fails_the_job_and_prunes_every_descendant() -> None:
    task = TaskFactory()
    parent, _, child, grandchild = _chain(task)

    out = job_attempt_end(
        pandaid=parent.pandaid,
        attemptnr=1,
        status="failed",
        cause="pilot",
        errors={"transexitcode": 3, "piloterrorcode": 1305, "piloterrordiag": "x" * 900},
    )

    assert out is not None and (out.status, out.pruned) == ("failed", 2)
    assert job_descendants([parent.pandaid]) == sorted([child.pandaid, grandchild.pandaid])
    assert set(Job.objects.filter(pk__in=[child.pk, grandchild.pk]).values_list("jobstatus", flat=True)) == {
        "pruned"
    }
    attempt = JobAttempt.objects.get(job=parent)
    assert (attempt.transexitcode, attempt.retry_action, len(attempt.piloterrordiag)) == (3, "no_retry", 500)
    counts = task_state_counts([task.pk])[task.pk]
    assert counts == {"failed": 1, "finished": 1, "pruned": 2}


def test_a_transient_failure_comes_back_as_the_next_attempt_of_the_same_pandaid() -> None:
    RetryRule.objects.create(
        name="lost", error_family="jobdispatcher", code=100, action="retry", params={"backoff_s": 60}
    )
    job = _running()

    out = job_attempt_end(
        pandaid=job.pandaid,
        attemptnr=1,
        status="failed",
        cause="watcher",
        errors={"jobdispatchererrorcode": 100, "jobdispatchererrordiag": "lost heartbeat"},
    )

    assert out is not None and out.status == "defined"
    job.refresh_from_db()
    assert (job.jobstatus, job.attemptnr, job.queue_id, job.jobdispatchererrorcode) == ("defined", 2, None, 0)
    assert job.retry_after is not None and job.retry_after > timezone.now()
    attempt = JobAttempt.objects.get(job=job)
    assert (attempt.jobdispatchererrorcode, attempt.retry_action) == (100, "retry")


def test_out_of_memory_retries_with_doubled_memory() -> None:
    RetryRule.objects.create(name="oom", error_family="pilot", code=1212, action="increase_memory")
    job = _running(request_memory_mb=8000)

    job_attempt_end(
        pandaid=job.pandaid, attemptnr=1, status="failed", cause="pilot", errors={"piloterrorcode": 1212}
    )

    job.refresh_from_db()
    assert (job.attemptnr, job.request_memory_mb) == (2, 16000)
    assert JobAttempt.objects.get(job=job).request_memory_mb == 8000


def test_stale_and_duplicate_final_updates_write_nothing() -> None:
    job = _running(attemptnr=2)

    assert job_attempt_end(pandaid=job.pandaid, attemptnr=1, status="finished", cause="old pilot") is None
    assert job_attempt_end(pandaid=job.pandaid, attemptnr=2, status="finished", cause="pilot") is not None
    assert job_attempt_end(pandaid=job.pandaid, attemptnr=2, status="finished", cause="pilot again") is None
    assert JobAttempt.objects.filter(job=job).count() == 1


def test_unknown_fields_are_refused() -> None:
    job = _running()
    with pytest.raises(ValueError, match="unknown field"):
        job_attempt_end(
            pandaid=job.pandaid, attemptnr=1, status="failed", cause="x", errors={"jobstatus": "finished"}
        )
    with pytest.raises(ValueError, match="ends finished or failed"):
        job_attempt_end(pandaid=job.pandaid, attemptnr=1, status="holding", cause="x")
