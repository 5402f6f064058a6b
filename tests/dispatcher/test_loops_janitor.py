from __future__ import annotations

import datetime as dt

import pytest

from core.models import Lease
from dispatcher.loops import janitor_one_batch
from dispatcher.models import Job, JobAttempt, JobStatusLog, PayloadLog
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _history(job: Job) -> None:
    JobStatusLog.objects.create(job=job, attemptnr=1, jobstatus=job.jobstatus, previous="running", time=NOW)
    PayloadLog.objects.create(job=job, attemptnr=1, sequence=0, text="hello")
    JobAttempt.objects.create(job=job, attemptnr=1, jobstatus=job.jobstatus, endtime=NOW)


def test_old_final_jobs_are_archived_and_recent_or_running_ones_keep_their_history() -> None:
    old = JobFactory(jobstatus="finished", statechangetime=NOW - dt.timedelta(days=91), lease="abc")
    month = JobFactory(jobstatus="failed", statechangetime=NOW - dt.timedelta(days=31))
    recent = JobFactory(jobstatus="finished", statechangetime=NOW - dt.timedelta(days=1))
    running = JobFactory(jobstatus="running", statechangetime=NOW - dt.timedelta(days=100), lease="live")
    for job in (old, month, recent, running):
        _history(job)

    assert janitor_one_batch(now=NOW) == 1 + 1 + 2  # one lease cleared, one status log, two payload logs

    assert Job.objects.get(pk=old.pk).lease == "" and Job.objects.get(pk=running.pk).lease == "live"
    assert set(JobStatusLog.objects.values_list("job_id", flat=True)) == {month.pk, recent.pk, running.pk}
    assert set(PayloadLog.objects.values_list("job_id", flat=True)) == {recent.pk, running.pk}
    assert JobAttempt.objects.count() == 4  # the retry chains stay
    assert janitor_one_batch(now=NOW) == 0


def test_long_expired_leases_are_deleted() -> None:
    Lease.objects.create(
        name="loop:dead", holder="gone", acquired_at=NOW, expires_at=NOW - dt.timedelta(hours=2)
    )
    Lease.objects.create(
        name="loop:live", holder="here", acquired_at=NOW, expires_at=NOW + dt.timedelta(minutes=1)
    )

    assert janitor_one_batch(now=NOW) == 1
    assert list(Lease.objects.values_list("name", flat=True)) == ["loop:live"]
