"""Upgrading to dispatcher 0022: the per-queue counts start from the job rows already there, the
triggers keep them from then on, and going back removes the triggers with the tables."""

from __future__ import annotations

import pytest
from django.db import connection

from dispatcher.queries import queue_loads
from dispatcher.services import job_transition
from tests.factories import JobFactory, QueueFactory
from tests.migrations import migrate_to

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]

BEFORE = [("dispatcher", "0021_workflow_task_edges")]
TRIGGERS = {
    "dispatcher_job_queue_count_insert",
    "dispatcher_job_queue_count_delete",
    "dispatcher_job_queue_count_update",
}


def _triggers() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'dispatcher_job'::regclass"
            " AND tgname LIKE 'dispatcher_job_queue_count_%%'"
        )
        return {name for (name,) in cursor.fetchall()}


def test_the_counts_start_from_the_jobs_already_there_and_the_triggers_keep_them() -> None:
    a, b = QueueFactory(name="MIG_A"), QueueFactory(name="MIG_B")
    migrate_to(BEFORE)
    try:
        assert _triggers() == set()
        # Jobs written before the counters existed (the job table is the same at 0021).
        running = JobFactory(jobstatus="running", queue=a)
        JobFactory(jobstatus="running", queue=a)
        JobFactory(jobstatus="activated", queue=b)
        JobFactory(jobstatus="finished", queue=b)
    finally:
        migrate_to(None)
    assert _triggers() == TRIGGERS
    assert queue_loads(["MIG_A", "MIG_B"]) == {"MIG_A": {"in_flight": 2}, "MIG_B": {"activated": 1}}

    job_transition(pandaid=running.pk, to="finished", cause="test")
    assert queue_loads(["MIG_A"]) == {"MIG_A": {"in_flight": 1}}

    migrate_to(BEFORE)
    try:
        assert _triggers() == set()
    finally:
        migrate_to(None)
