"""Upgrading a database whose monitor recorded its own deltas (pandamon 0002) to the engine's change
feed (dispatcher 0006, pandamon 0003; decision 0006): folded and unfolded deltas, and writes made
while both sets of triggers ran, end up counted exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from dispatcher.services.transitions import job_transition, jobs_transition_bulk, task_count_deltas_add
from pandamon import rollups
from pandamon.models import ErrorSummary, JobSummary
from tests.factories import JobFactory, QueueFactory, UserFactory
from tests.migrations import migrate_to

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]

BEFORE = [
    ("dispatcher", "0005_task_site_constraints"),
    ("pandamon", "0002_update_trigger_skips_set_based_writers"),
]
BOTH_TRIGGERS = [
    ("dispatcher", "0006_change_feed"),
    ("pandamon", "0002_update_trigger_skips_set_based_writers"),
]
HANDED_OVER = [
    ("dispatcher", "0009_jobattempt_lease"),
    ("pandamon", "0003_change_feed_moves_to_the_engine"),
]
NOW = datetime(2026, 11, 20, 12, 37, 11, tzinfo=UTC)


def _historical(model: str, targets: list[tuple[str, str]]) -> Any:
    """The dispatcher model as the schema at `targets` has it (the current one may have columns
    added by later migrations)."""
    return MigrationExecutor(connection).loader.project_state(targets).apps.get_model("dispatcher", model)


def _old_task(targets: list[tuple[str, str]]) -> Any:
    """A workflow and its task, as TaskFactory makes them, written with the schema at `targets`."""
    owner = UserFactory()
    workflow = _historical("Workflow", targets).objects.create(name="wf-cf", owner_id=owner.pk)
    return _historical("Task", targets).objects.create(
        workflow_id=workflow.pk, label="cf", name="wf-cf/cf", username=owner.username
    )


def _old_transition(targets: list[tuple[str, str]], pandaid: int, to: str, **fields: Any) -> None:
    """A job's status change as `job_transition` writes the job row (one UPDATE, which the
    triggers record), with the schema at `targets`."""
    assert _historical("Job", targets).objects.filter(pk=pandaid).update(jobstatus=to, **fields) == 1


def _old_attempt(targets: list[tuple[str, str]], job: Any, **fields: Any) -> Any:
    """A failed attempt, as JobAttemptFactory makes one, written with the schema at `targets`."""
    attempt = _historical("JobAttempt", targets)
    return attempt.objects.create(
        job_id=job.pandaid, attemptnr=1, jobstatus="failed", queue=job.queue_id or "", **fields
    )


def _old_job(targets: list[tuple[str, str]], task: Any, **fields: Any) -> Any:
    """A job, as JobFactory makes one (counted in its task's counters), with the schema at `targets`."""
    job = _historical("Job", targets).objects.create(
        task_id=task.pk,
        workflow_id=task.workflow_id,
        name=f"job{_historical('Job', targets).objects.count()}",
        label=task.label,
        command="true",
        produsername=task.username,
        **fields,
    )
    task_count_deltas_add({(job.task_id, job.jobstatus): 1})
    return job


def _scalar(sql: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def _triggers() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            " AND tgrelid IN ('dispatcher_job'::regclass, 'dispatcher_jobattempt'::regclass)"
        )
        return {name for (name,) in cursor.fetchall()}


def _summaries() -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    jobs = set(JobSummary.objects.values_list("bucket", "jobstatus", "facet", "value", "count"))
    errors = set(
        ErrorSummary.objects.values_list("bucket", "family", "code", "template", "jeditaskid", "count")
    )
    return jobs, errors


def test_the_monitors_deltas_move_to_the_change_feed_and_the_fold_equals_a_rebuild() -> None:
    try:
        migrate_to(BEFORE)
        assert {"pandamon_job_summary_update", "pandamon_error_summary_insert"} <= _triggers()
        site = _historical("Site", BEFORE).objects.create(name="SITE_CF", region="US")
        for name in ("Q_A", "Q_B"):
            _historical("Queue", BEFORE).objects.create(name=name, site_id=site.pk, max_rss_mb=8000)
        # Rows and status changes at the old schemas are written with those schemas' models (the
        # current ones have columns later migrations add).
        task = _old_task(BEFORE)
        jobs = [
            _old_job(BEFORE, task, jobstatus="defined", statechangetime=NOW - timedelta(minutes=37 * i))
            for i in range(8)
        ]
        # Folded: the summaries hold every job so far and no delta is left.
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE pandamon_jobsummary, pandamon_errorsummary, pandamon_errorattemptsummary,"
                " pandamon_jobsummarydelta, pandamon_errordelta"
            )
            rollups.rollups_backfill(cursor, core_seconds=False, keyed_split=True)  # as before pandamon 0004
        # Unfolded, in the monitor's own tables.
        for i, job in enumerate(jobs[:4]):
            _old_transition(
                BEFORE,
                job.pandaid,
                "activated",
                queue_id=("Q_A", "Q_B")[i % 2],
                statechangetime=NOW - timedelta(minutes=7 * i),
            )
        _old_attempt(
            BEFORE,
            jobs[0],
            endtime=NOW - timedelta(minutes=90),
            piloterrorcode=1201,
            piloterrordiag="Lost heartbeat from wn7 after 7200 s",
        )
        _old_job(BEFORE, task, jobstatus="defined", statechangetime=NOW - timedelta(hours=3))
        unfolded = _scalar("SELECT COUNT(*) FROM pandamon_jobsummarydelta")
        assert unfolded > 0 and _scalar("SELECT COUNT(*) FROM pandamon_errordelta") == 1

        # The engine's triggers are on, the monitor's still too: every write is recorded twice.
        migrate_to(BOTH_TRIGGERS)
        _old_transition(BOTH_TRIGGERS, jobs[4].pandaid, "cancelled", statechangetime=NOW)
        _old_attempt(
            BOTH_TRIGGERS,
            jobs[1],
            endtime=NOW - timedelta(minutes=20),
            exeerrorcode=137,
            exeerrordiag="Payload killed",
        )
        assert _scalar("SELECT COUNT(*) FROM dispatcher_jobchange") == 2
        assert _scalar("SELECT COUNT(*) FROM pandamon_jobsummarydelta") == unfolded + 2

        # Handed over (pandamon 0004 then rebuilds the summaries with core-seconds; below).
        migrate_to(HANDED_OVER)
        triggers = _triggers()
        assert not {t for t in triggers if t.startswith("pandamon_")}
        assert {"dispatcher_job_change_update", "dispatcher_attempt_change_insert"} <= triggers
        assert _scalar("SELECT to_regclass('pandamon_jobsummarydelta')") is None
        assert _scalar("SELECT COUNT(*) FROM dispatcher_jobchange") == unfolded + 2
        assert _scalar("SELECT COUNT(*) FROM dispatcher_failedattemptchange") == 2

        migrate_to(None)
        # The new writers, then fold everything: the summaries equal a rebuild from the rows.
        jobs_transition_bulk(
            source="activated",
            to="sent",
            cause="test",
            pandaids=[j.pandaid for j in jobs[:3]],
            fields={"statechangetime": NOW + timedelta(minutes=1)},
        )
        job_transition(pandaid=jobs[5].pandaid, to="cancelled", cause="test")
        while rollups.rollups_fold(batch=3):
            pass
        folded = _summaries()
        rollups.rollups_rebuild()
        assert _summaries() == folded
        assert folded[1]  # the failed attempts were counted
    finally:
        migrate_to(None)


def test_the_hand_over_reverses() -> None:
    try:
        QueueFactory(name="Q_A")
        job = JobFactory(jobstatus="defined", statechangetime=NOW)
        job_transition(pandaid=job.pandaid, to="activated", cause="test", fields={"queue_id": "Q_A"})
        changes = _scalar("SELECT COUNT(*) FROM dispatcher_jobchange")
        assert changes == 3  # +insert, −old/+new
        migrate_to([("pandamon", "0002_update_trigger_skips_set_based_writers")])
        assert _scalar("SELECT COUNT(*) FROM pandamon_jobsummarydelta") == changes
        assert _scalar("SELECT COUNT(*) FROM dispatcher_jobchange") == 0
        assert "pandamon_job_summary_update" in _triggers()
        migrate_to(
            [("pandamon", "0003_change_feed_moves_to_the_engine")]
        )  # 0004 rebuilds (emptying the feed)
        assert _scalar("SELECT COUNT(*) FROM dispatcher_jobchange") == changes
        assert not {t for t in _triggers() if t.startswith("pandamon_")}
    finally:
        migrate_to(None)
