"""Upgrading a database whose /errors/ split is kept per (hour, queue, task, user) (pandamon 0006)
to rows per dimension (pandamon 0007): folded and unfolded failed attempts end up counted exactly
once, as a rebuild from the attempt rows gives; back again, the split per combination is counted
from the attempts, and refused while the feed holds failed attempts not folded yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from dispatcher import changefeed
from pandamon import rollup_sql, rollups
from pandamon.models import ErrorSplitSummary
from tests.factories import JobAttemptFactory, JobFactory, QueueFactory, SiteFactory, TaskFactory
from tests.migrations import migrate_to

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]

KEYED = [("pandamon", "0006_job_filter_summary_pairs")]
NOW = datetime(2026, 11, 20, 12, 37, 11, tzinfo=UTC)
_KEYED_ROWS = (
    "SELECT bucket, computingsite, jeditaskid, produsername, count, core_s FROM pandamon_errorattemptsummary"
)


def _failed(n: int, tasks: list[Any], start: int) -> None:
    """`n` jobs with one failed attempt each, over queues, tasks (two users) and hours."""
    for i in range(start, start + n):
        queue = ("Q_A", "Q_B")[i % 2]
        job = JobFactory(task=tasks[i % 3], jobstatus="failed", queue_id=queue, statechangetime=NOW)
        JobAttemptFactory(
            job=job,
            queue=queue,
            endtime=NOW - timedelta(minutes=23 * i),
            piloterrorcode=1201,
            piloterrordiag=f"Lost heartbeat from wn{i} after 7200 s",
            walltime_s=100 + i,
            request_cores=1 + i % 4,
        )


def _split() -> set[tuple[Any, ...]]:
    return set(ErrorSplitSummary.objects.values_list("bucket", "dim", "value", "count", "core_s"))


def _keyed() -> set[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(_KEYED_ROWS)
        return set(cursor.fetchall())


def test_the_split_moves_to_one_row_per_dimension_and_back_counting_each_attempt_once() -> None:
    site = SiteFactory(name="SITE_US", region="US")
    for name in ("Q_A", "Q_B"):
        QueueFactory(name=name, site=site)
    tasks = [TaskFactory(), TaskFactory(), TaskFactory()]
    migrate_to(KEYED)
    try:
        _failed(12, tasks, 0)
        with connection.cursor() as cursor:  # folded, as the fold of pandamon 0006's release kept it
            tables = [
                *rollup_sql.SUMMARY_TABLES[:2],
                "pandamon_errorattemptsummary",
                *changefeed.TABLES,
            ]
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
            rollups.rollups_backfill(cursor, keyed_split=True)
        assert len(_keyed()) > 3
        _failed(6, tasks, 12)  # in the feed, not folded yet
    finally:
        migrate_to(None)
    while rollups.rollups_fold():
        pass
    migrated = _split()
    assert {row[1] for row in migrated} == set(rollup_sql.ERROR_SPLIT_DIMS)
    for dim in rollup_sql.ERROR_SPLIT_DIMS:
        assert sum(row[3] for row in migrated if row[1] == dim) == 18
    rollups.rollups_rebuild()
    assert migrated == _split()

    _failed(2, tasks, 18)
    with pytest.raises(RuntimeError, match="not folded yet"):
        migrate_to(KEYED)
    migrate_to(None)  # the later migrations were undone before the refusal: forward again
    while rollups.rollups_fold():
        pass
    per_dimension = _split()
    try:
        migrate_to(KEYED)
        back = _keyed()
        # Each combination's row adds up to the per-dimension rows it was migrated from.
        for dim, column in (("site", 1), ("task", 2), ("user", 3)):
            summed: dict[tuple[Any, str], list[int]] = {}
            for row in back:
                sums = summed.setdefault((row[0], str(row[column])), [0, 0])
                sums[0] += row[4]
                sums[1] += row[5]
            expected = {(b, v, n, c) for b, d, v, n, c in per_dimension if d == dim}
            assert {(b, v, n, c) for (b, v), (n, c) in summed.items()} == expected
        assert sum(row[4] for row in back) == 20
    finally:
        migrate_to(None)
