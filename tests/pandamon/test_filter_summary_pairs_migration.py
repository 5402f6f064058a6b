"""Upgrading a database whose filter summary has single dimensions only (pandamon 0005) to its pairs
(pandamon 0006, decision 0016): folded and unfolded changes end up counted exactly once, in the
single dimensions and the pairs alike (what a rebuild from the job rows gives)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pandamon import rollup_sql, rollups
from pandamon.models import JobFilterSummary
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory
from tests.migrations import migrate_to

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]

SINGLE = [("pandamon", "0005_job_filter_summary")]
NOW = datetime(2026, 11, 20, 12, 37, 11, tzinfo=UTC)
_COLS = ("bucket", "jobstatus", "dim", "dimvalue", "facet", "value", "count")


def _jobs(n: int, tasks: list[Any], start: int, *, apart: timedelta = timedelta(minutes=17)) -> None:
    """Jobs `start`…`start + n - 1` of the tasks, on two queues and none, `apart` from each other."""
    for i in range(start, start + n):
        JobFactory(
            task=tasks[i % len(tasks)],
            jobstatus=("finished", "failed", "running")[i % 3],
            queue_id=("Q_A", "Q_B", None)[i % 3],
            statechangetime=NOW - apart * i,
        )


def _summary() -> set[tuple[Any, ...]]:
    return set(JobFilterSummary.objects.values_list(*_COLS))


def _queues_and_tasks() -> list[Any]:
    """Queues Q_A and Q_B at a US site; two tasks, labelled coadd and calib."""
    site = SiteFactory(name="SITE_US", region="US")
    for name in ("Q_A", "Q_B"):
        QueueFactory(name=name, site=site)
    return [TaskFactory(label="coadd"), TaskFactory(label="calib")]


def test_the_pairs_migration_counts_folded_and_unfolded_changes_once() -> None:
    tasks = _queues_and_tasks()
    migrate_to(SINGLE)
    try:
        _jobs(20, tasks, 0)
        while rollups.rollups_fold(errors=False, days=False):  # as pandamon 0005 keeps them
            pass
        # The fold of pandamon 0005's release wrote no pair rows.
        JobFilterSummary.objects.filter(dim__in=list(rollup_sql.FILTER_PAIRS)).delete()
        _jobs(10, tasks, 20)  # changes not folded yet
    finally:
        migrate_to(None)
    while rollups.rollups_fold():
        pass
    migrated = _summary()
    assert {row[2] for row in migrated} == set(rollup_sql.FILTER_SUMMARY_DIMS)
    rollups.rollups_rebuild()
    assert migrated == _summary()
