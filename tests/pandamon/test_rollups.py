"""Monitor rollups (decision 0003): whatever the writes and wherever the folds fall, the rollup
reads equal the plain scans, for windows whose edges cut through hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, Q
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from dispatcher.models import FailedAttemptChange, Job, JobAttempt, JobChange
from dispatcher.services.transitions import job_transition, jobs_transition_bulk
from dispatcher.states import JOB_FINAL, JOB_TRANSITIONS, JobStatus
from pandamon import queries, rollup_sql, rollups
from pandamon.models import ErrorSummary, JobSummary
from tests.factories import JobAttemptFactory, JobFactory, QueueFactory, TaskFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the rollups are PostgreSQL only"),
]

NOW = datetime(2026, 11, 20, 12, 37, 11, tzinfo=UTC)
QUEUES = ("Q_A", "Q_B", "Q_C")
DIAGS = (
    (1201, "Lost heartbeat from wn7.slac.org after 7200 s"),
    (1201, "Lost heartbeat from wn9.slac.org after 3600 s"),
    (1099, "Stage-in failed: /data/raw/file_12.fits not found"),
)


def _time(minutes: int, stretch: int = 1) -> datetime:
    """`minutes` (times `stretch`: the same operations spread over days) before NOW, off the minute."""
    return NOW - timedelta(minutes=minutes * stretch, seconds=minutes * 7 % 60)


# One operation: (kind, job index, minutes ago, choice).
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "insert",
                "transition",
                "bulk_transition",
                "bulk_update",
                "facet_update",
                "delete",
                "attempt",
                "heartbeat",
                "fold",
            ]
        ),
        st.integers(0, 30),
        st.integers(0, 6 * 60),  # a few hours, so edges and whole hours both hold jobs
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=60,
)
WINDOWS = st.tuples(
    st.integers(1, 7 * 60),  # since, minutes before NOW
    st.one_of(st.none(), st.integers(1, 5 * 60)),  # length in minutes, or open
    st.one_of(st.none(), st.sampled_from(["finished", "failed", "running", "failed|finished", "defined"])),
)


def _apply(ops: list[tuple[str, int, int, int]], tasks: list[Any], *, stretch: int = 1) -> bool:
    """Run the operations (their times `_time(minutes, stretch)`); returns whether a failed attempt
    was deleted (samples may then name it)."""
    deleted_attempts = False
    for kind, index, minutes, choice in ops:
        jobs = list(Job.objects.order_by("pandaid").values_list("pandaid", "jobstatus"))
        pandaid, status = jobs[index % len(jobs)] if jobs else (None, None)
        when = _time(minutes, stretch)
        if kind == "insert" or pandaid is None:
            new_status = JobStatus.values[choice % len(JobStatus.values)]
            JobFactory(
                task=tasks[choice % len(tasks)],
                jobstatus=new_status,
                queue_id=None if new_status == JobStatus.DEFINED else QUEUES[choice % 3],
                statechangetime=None if choice % 17 == 0 else when,
                attemptnr=1 + choice % 3,
                piloterrorcode=DIAGS[choice % 3][0] if choice % 5 == 0 else 0,
            )
        elif kind == "transition":
            targets = sorted(JOB_TRANSITIONS[JobStatus(status)])
            if targets:
                target = targets[choice % len(targets)]
                fields: dict[str, Any] = {"statechangetime": when}
                if target == JobStatus.ACTIVATED:
                    fields["queue_id"] = QUEUES[choice % 3]
                    fields["pending_parents"] = 0
                job_transition(pandaid=pandaid, to=target, cause="test", fields=fields)
        elif kind == "bulk_transition":  # the services' set-based form: writes its own deltas
            targets = sorted(JOB_TRANSITIONS[JobStatus(status)])
            if targets:
                target = targets[choice % len(targets)]
                fields = {"statechangetime": when if choice % 11 else None}
                if target == JobStatus.ACTIVATED:
                    fields["queue_id"] = QUEUES[choice % 3]
                    fields["pending_parents"] = 0
                if choice % 3 == 0:
                    fields["attemptnr"] = 1 + choice % 4
                span = [p for p, _ in jobs[index % len(jobs) : index % len(jobs) + 1 + choice % 6]]
                if choice % 2:
                    jobs_transition_bulk(source=status, to=target, cause="test", pandaids=span, fields=fields)
                else:
                    jobs_transition_bulk(
                        source=status,
                        to=target,
                        cause="test",
                        where=Q(pandaid__gte=pandaid),
                        limit=1 + choice % 4,
                        fields=fields,
                    )
        elif kind == "bulk_update":  # a set-based write outside the services (admin, repair)
            Job.objects.filter(pandaid__gte=pandaid, pandaid__lt=pandaid + 1 + choice % 5).update(
                jobstatus=(JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CLOSED)[choice % 3],
                statechangetime=when,
                queue_id=QUEUES[choice % 3],
            )
        elif kind == "facet_update":
            # A job's task and user never change (the error rollups keep them as of the attempt).
            Job.objects.filter(pandaid=pandaid).update(
                attemptnr=1 + choice % 4, exeerrorcode=choice % 3, label=f"label{choice % 2}"
            )
        elif kind == "delete":
            deleted_attempts |= JobAttempt.objects.filter(job_id=pandaid, jobstatus="failed").exists()
            Job.objects.filter(pandaid=pandaid).delete()
        elif kind == "attempt":
            code, diag = DIAGS[choice % 3]
            JobAttemptFactory(
                job_id=pandaid,
                attemptnr=1 + JobAttempt.objects.filter(job_id=pandaid).count(),
                jobstatus="failed" if choice % 7 else "finished",
                queue=QUEUES[choice % 3],
                endtime=when,
                piloterrorcode=code,
                piloterrordiag=diag,
                exeerrorcode=137 if choice % 2 else 0,
                exeerrordiag="Payload killed: RSS 4123456 kB above limit in /scratch/job_42/work",
            )
        elif kind == "heartbeat":
            Job.objects.filter(pandaid=pandaid).update(heartbeat_at=when, node=f"wn{choice}")
        elif kind == "fold":
            rollups.rollups_fold(batch=1 + choice % 50)
    return deleted_attempts


def _check(since: datetime, until: datetime | None, jobstatus: str | None, *, samples: bool) -> None:
    unit = "hour" if choice_unit(since, until) else "day"
    window = Q(statechangetime__gte=since) & (Q(statechangetime__lt=until) if until else Q())
    applied = {"jobstatus": jobstatus} if jobstatus else {}
    q = window & (Q(jobstatus__in=jobstatus.split("|")) if jobstatus else Q())
    rollup = queries.job_rollup_selection(since, until, applied)
    assert (rollup is None) == (rollups.Window.of(since, until) is None)
    assert queries.jobs_facets(q, unit=unit, rollup=rollup) == queries.jobs_facets(q, unit=unit)

    cut = rollups.Window.of(since, until)
    if cut is not None:
        final = [s.value for s in JOB_FINAL]
        plain = {
            (r["queue_id"], r["jobstatus"]): r["n"]
            for r in Job.objects.filter(window, jobstatus__in=final, queue__isnull=False)
            .values("queue_id", "jobstatus")
            .annotate(n=Count("*"))
        }
        assert {(q_, s): n for q_, s, n in rollups.queue_state_rows(cut, states=final)} == plain

    attempts = Q(endtime__gte=since) & (Q(endtime__lt=until) if until else Q())
    error_window = queries.error_rollup_window(since, until, {})
    scanned = queries.errors_summary(attempts, unit=unit)
    rolled = queries.errors_summary(attempts, unit=unit, rollup=error_window)
    if not samples:
        for summary in (scanned, rolled):
            for group in summary.groups:
                group["samples"] = group["example"] = None
    assert rolled == scanned


def choice_unit(since: datetime, until: datetime | None) -> bool:
    return ((until or NOW) - since) <= timedelta(hours=3)


class TestRollupsEqualScans(HypothesisTestCase):
    @given(ops=OPS, windows=st.lists(WINDOWS, min_size=1, max_size=4))
    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_rollup_reads_equal_the_scans_after_any_writes_and_folds(
        self, ops: list[tuple[str, int, int, int]], windows: list[tuple[int, int | None, str | None]]
    ) -> None:
        for name in QUEUES:
            QueueFactory(name=name)
        tasks = [TaskFactory(), TaskFactory()]
        deleted = _apply(ops, tasks)
        for since_min, length, jobstatus in windows:
            since = _time(since_min)
            until = since + timedelta(minutes=length) if length else None
            _check(since, until, jobstatus, samples=not deleted)
        # Folding everything changes nothing either, and leaves no zero rows behind.
        while rollups.rollups_fold(batch=7):
            pass
        assert not JobSummary.objects.filter(count=0).exists()
        for since_min, length, jobstatus in windows:
            since = _time(since_min)
            _check(
                since, since + timedelta(minutes=length) if length else None, jobstatus, samples=not deleted
            )


def test_a_rebuild_gives_the_same_summaries_as_the_folds() -> None:
    for name in QUEUES:
        QueueFactory(name=name)
    tasks = [TaskFactory(), TaskFactory()]
    _apply([("insert", i, i * 37, i * 11) for i in range(30)], tasks)
    _apply([("transition", i, i * 13, i) for i in range(30)], tasks)
    _apply([("attempt", i, i * 29, i * 3) for i in range(30)], tasks)
    while rollups.rollups_fold():
        pass

    def snapshot() -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
        jobs = set(JobSummary.objects.values_list("bucket", "jobstatus", "facet", "value", "count"))
        errors = set(
            ErrorSummary.objects.values_list("bucket", "family", "code", "template", "jeditaskid", "count")
        )
        return jobs, errors

    folded = snapshot()
    rollups.rollups_rebuild()
    assert snapshot() == folded
    assert not JobChange.objects.exists() and not FailedAttemptChange.objects.exists()


def test_heartbeats_add_no_delta_rows() -> None:
    """The dispatcher's heartbeat statement (pilot_calls.heartbeat) changes no summarised column
    when the state does not move: the trigger's WHEN clause keeps it from running at all."""
    from dispatcher.services.pilot_calls import PilotUpdate
    from dispatcher.services.pilot_calls.heartbeat import heartbeat_statement

    queue = QueueFactory(name="Q_A")
    job = JobFactory(jobstatus="running", queue_id=queue.name, statechangetime=NOW, attemptnr=1, lease="l1")
    before = JobChange.objects.count()
    update = PilotUpdate(
        pandaid=job.pandaid,
        status="running",
        attemptnr=1,
        lease="l1",
        node="wn1.example.org",
        pilot_id="pilot-1",
        batch_id="42",
        metrics={"cpu_time_s": 12.0, "max_rss_kb": 1000, "max_pss_kb": 900, "actual_cores": 1},
    )
    sql, params = heartbeat_statement([update], None, now=NOW + timedelta(minutes=5))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.fetchall() == [(job.pandaid, "running")]
    job.refresh_from_db()
    assert job.heartbeat_at == NOW + timedelta(minutes=5)
    assert JobChange.objects.count() == before
    # A state change through the same statement does add its −old/+new pair.
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "rank": 3, "status": "holding"})
    assert JobChange.objects.count() == before + 2


def test_a_bulk_transition_writes_one_pair_per_job_and_leaves_the_trigger_on() -> None:
    """jobs_transition_bulk appends the deltas of its UPDATE itself; the row trigger skips exactly
    that statement (no pair twice, none missing), and fires again for the next update of the same
    transaction."""
    from django.db import transaction

    for name in QUEUES:
        QueueFactory(name=name)
    task = TaskFactory()
    jobs = [JobFactory(task=task, jobstatus="defined", statechangetime=_time(i * 50)) for i in range(5)]
    nulls = JobFactory(task=task, jobstatus="defined", statechangetime=None)
    while rollups.rollups_fold():  # the insert deltas
        pass
    with transaction.atomic():
        moved = jobs_transition_bulk(
            source="defined",
            to="activated",
            cause="test",
            pandaids=[j.pandaid for j in [*jobs, nulls]],
            fields={"queue_id": "Q_A", "statechangetime": NOW},
        )
        assert sorted(moved) == sorted(j.pandaid for j in [*jobs, nulls])
        # five −old/+new pairs and one +new (the job without a state-change time had no tuple)
        assert JobChange.objects.filter(delta=-1).count() == 5
        assert JobChange.objects.filter(delta=1).count() == 6
        job_transition(pandaid=jobs[0].pandaid, to="sent", cause="test")
        assert JobChange.objects.count() == 13
    while rollups.rollups_fold(batch=5):
        pass
    folded = set(JobSummary.objects.values_list("bucket", "jobstatus", "facet", "value", "count"))
    rollups.rollups_rebuild()
    assert set(JobSummary.objects.values_list("bucket", "jobstatus", "facet", "value", "count")) == folded


def test_a_failed_bulk_transition_leaves_the_trigger_on() -> None:
    """If the set-based statement fails, the savepoint that catches the error takes the setting
    back with it: the next update in the transaction is counted by the trigger."""
    from django.db import IntegrityError, transaction

    task = TaskFactory()
    job, other = JobFactory(task=task, statechangetime=NOW), JobFactory(task=task, statechangetime=NOW)
    while rollups.rollups_fold():
        pass
    with transaction.atomic():
        with pytest.raises(IntegrityError):  # activated without a queue: job_activated_has_queue
            jobs_transition_bulk(source="defined", to="activated", cause="test", pandaids=[job.pandaid])
        job_transition(pandaid=other.pandaid, to="cancelled", cause="test")
        assert JobChange.objects.count() == 2


def test_the_summary_facets_are_the_page_facets() -> None:
    assert list(rollup_sql.JOB_FACET_COLUMNS) == list(queries.JOB_FACETS)
    for family, code, diag in rollup_sql.ERROR_FAMILIES:
        assert (family, code, diag) in queries._FAMILIES


def test_the_rebuild_command_refills_the_summaries() -> None:
    import io

    from django.core.management import call_command

    QueueFactory(name="Q_A")
    JobFactory(jobstatus="running", queue_id="Q_A", statechangetime=NOW)
    JobSummary.objects.all().delete()
    call_command("monitor_rollup_rebuild", stdout=io.StringIO())
    assert JobSummary.objects.filter(facet="computingsite", value="Q_A", jobstatus="running").get().count == 1
    assert not JobChange.objects.exists()
