"""The engine's change feed (decision 0006): what each write path appends to `JobChange` and
`FailedAttemptChange`, read back without the monitor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from dispatcher.changefeed import JOB_CHANGE_COLUMNS, JOB_FACET_COLUMNS, JOB_FACET_FIELDS, set_based_changes
from dispatcher.models import FailedAttemptChange, Job, JobChange
from dispatcher.services import job_transition, jobs_transition_bulk
from tests.factories import JobAttemptFactory, JobFactory, QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres_only")]

NOW = datetime(2026, 11, 20, 12, 37, 11, tzinfo=UTC)


def _changes() -> list[tuple[int, str, str]]:
    return list(JobChange.objects.order_by("id").values_list("delta", "jobstatus", "computingsite"))


def test_inserts_transitions_and_deletes_append_the_job_tuple() -> None:
    QueueFactory(name="Q_A")
    job = JobFactory(jobstatus="defined", statechangetime=NOW)
    JobFactory(jobstatus="defined", statechangetime=None)  # no state-change time: no tuple
    assert _changes() == [(1, "defined", "")]

    job_transition(pandaid=job.pandaid, to="activated", cause="test", fields={"queue_id": "Q_A"})
    assert _changes()[1:] == [(-1, "defined", ""), (1, "activated", "Q_A")]

    Job.objects.filter(pandaid=job.pandaid).update(heartbeat_at=NOW, node="wn1")  # no tuple column
    assert len(_changes()) == 3

    Job.objects.filter(pandaid=job.pandaid).delete()
    assert _changes()[3:] == [(-1, "activated", "Q_A")]
    row = JobChange.objects.order_by("id").last()
    assert row is not None and (row.jeditaskid, row.produsername) == (job.task_id, job.produsername)


def test_a_bulk_transition_appends_one_pair_per_job_once() -> None:
    QueueFactory(name="Q_A")
    task = TaskFactory()
    jobs = [JobFactory(task=task, statechangetime=NOW - timedelta(minutes=i)) for i in range(4)]
    JobChange.objects.all().delete()
    with transaction.atomic():
        moved = jobs_transition_bulk(
            source="defined",
            to="activated",
            cause="test",
            pandaids=[j.pandaid for j in jobs],
            fields={"queue_id": "Q_A", "statechangetime": NOW},
        )
        assert len(moved) == 4
        assert sorted(_changes()) == [(-1, "defined", "")] * 4 + [(1, "activated", "Q_A")] * 4
        # The trigger is on again for the next statement of the same transaction.
        job_transition(pandaid=jobs[0].pandaid, to="sent", cause="test")
        assert len(_changes()) == 10


def test_failed_attempts_are_recorded_with_their_task_and_user() -> None:
    job = JobFactory(jobstatus="running", statechangetime=NOW)
    JobAttemptFactory(job=job, jobstatus="finished", endtime=NOW)
    attempt = JobAttemptFactory(
        job=job,
        attemptnr=2,
        jobstatus="failed",
        endtime=NOW,
        queue="Q_B",
        piloterrorcode=1201,
        piloterrordiag="Lost heartbeat",
    )
    (change,) = FailedAttemptChange.objects.all()
    assert (change.delta, change.job_id, change.jeditaskid, change.produsername, change.computingsite) == (
        1,
        job.pandaid,
        job.task_id,
        job.produsername,
        "Q_B",
    )
    assert (change.piloterrorcode, change.piloterrordiag) == (1201, "Lost heartbeat")
    attempt.delete()
    assert sorted(FailedAttemptChange.objects.values_list("delta", flat=True)) == [-1, 1]


def test_the_facet_list_names_job_columns_and_fields() -> None:
    columns = {f.column for f in Job._meta.concrete_fields}
    assert set(JOB_FACET_COLUMNS.values()) <= columns
    assert ("statechangetime", *JOB_FACET_COLUMNS.values()) == JOB_CHANGE_COLUMNS
    assert list(JOB_FACET_FIELDS) == list(JOB_FACET_COLUMNS)
    assert JOB_FACET_FIELDS["computingsite"] == "queue_id" and JOB_FACET_FIELDS["jeditaskid"] == "task_id"


@pytest.mark.django_db(transaction=True)
def test_set_based_changes_needs_a_transaction() -> None:
    with pytest.raises(RuntimeError, match="needs a transaction"), set_based_changes():
        pass
