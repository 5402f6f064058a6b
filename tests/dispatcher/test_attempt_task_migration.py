"""Upgrading to dispatcher 0017: attempts written before it (no task column) get their job's task,
and a task's core-hours, read through the new column, count them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from dispatcher.models import JobAttempt
from dispatcher.queries import tasks_core_use
from tests.factories import JobFactory, TaskFactory
from tests.migrations import migrate_to

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("dispatcher", "0016_job_ended_stats_index")]
END = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def test_attempts_written_before_the_task_column_get_their_jobs_task() -> None:
    tasks = [TaskFactory(), TaskFactory()]
    jobs = [JobFactory(task=tasks[i % 2], jobstatus="failed") for i in range(5)]
    migrate_to(BEFORE)
    try:
        with connection.cursor() as cur:
            for n, job in enumerate(jobs):
                cur.execute(
                    "INSERT INTO dispatcher_jobattempt (job_id, attemptnr, jobstatus, computingsite, node,"
                    " pilot_id, request_memory_mb, request_cores, walltime_s, piloterrorcode,"
                    " piloterrordiag, exeerrorcode, exeerrordiag, transexitcode, ddmerrorcode,"
                    " ddmerrordiag, jobdispatchererrorcode, jobdispatchererrordiag, superrorcode,"
                    " superrordiag, taskbuffererrorcode, taskbuffererrordiag, retry_action,"
                    " retry_reason, endtime, lease)"
                    " VALUES (%s, 1, 'failed', '', '', '', 0, 2, %s, 0, '', 0, '', 0, 0, '', 0, '', 0,"
                    " '', 0, '', '', '', %s, '')",
                    [job.pk, 100.0 * (n + 1), END],
                )
    finally:
        migrate_to(None)
    assert {a.job_id: a.task_id for a in JobAttempt.objects.all()} == {j.pk: j.task_id for j in jobs}
    use = tasks_core_use([t.pk for t in tasks])
    # Task 0 has jobs 0, 2, 4 (walltime 100, 300, 500 s × 2 cores), task 1 jobs 1, 3 (200, 400).
    assert (use[tasks[0].pk].total_core_s, use[tasks[0].pk].attempts) == (1800, 3)
    assert (use[tasks[1].pk].total_core_s, use[tasks[1].pk].failed) == (1200, 2)


def test_an_attempt_written_without_a_task_takes_its_jobs() -> None:
    job = JobFactory(jobstatus="failed")
    attempt = JobAttempt.objects.create(job=job, attemptnr=1, jobstatus="failed", endtime=END)
    attempt.refresh_from_db()
    assert attempt.task_id == job.task_id
