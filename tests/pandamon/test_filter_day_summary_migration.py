"""Upgrading a database whose filter summary is kept per hour only (pandamon 0007) to its day level
(pandamon 0008, decision 0019): the days are summed from the hours, and changes not folded at the
upgrade are folded into both, so the day level ends as a rebuild from the job rows gives it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pandamon import rollups
from pandamon.models import JobFilterDaySummary
from tests.migrations import migrate_to
from tests.pandamon.test_filter_summary_pairs_migration import _COLS, _jobs, _queues_and_tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]

HOURS_ONLY = [("pandamon", "0007_error_split_per_dimension")]
APART = timedelta(minutes=173)  # 40 jobs over four days


def _days() -> set[tuple[Any, ...]]:
    return set(JobFilterDaySummary.objects.values_list(*_COLS))


def test_the_day_level_migration_counts_folded_and_unfolded_changes_once() -> None:
    tasks = _queues_and_tasks()
    migrate_to(HOURS_ONLY)
    try:
        _jobs(30, tasks, 0, apart=APART)
        while rollups.rollups_fold(days=False):  # as pandamon 0007 keeps them
            pass
        _jobs(10, tasks, 30, apart=APART)  # changes not folded yet
    finally:
        migrate_to(None)
    migrated = _days()
    assert len({row[0] for row in migrated}) >= 3
    while rollups.rollups_fold():
        pass
    folded = _days()
    assert folded != migrated  # the unfolded changes reached the day level too
    rollups.rollups_rebuild()
    assert folded == _days()
