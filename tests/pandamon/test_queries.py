"""Every named read of pandamon/queries/ with its query count pinned: the count is the same
for 3 jobs or 3 million, which is what keeps the pages fast."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from pandamon import queries
from tests.pandamon.conftest import World, pinned

pytestmark = pytest.mark.django_db


def test_named_reads_run_a_fixed_number_of_queries(world: World, django_assert_num_queries) -> None:
    since = timezone.now() - timedelta(hours=12)
    pandaid = world.jobs["isr_4"].pandaid
    cern = queries.site_detail("CERN")
    task = queries.task_detail(world.tasks["isr"].pk)
    assert cern is not None
    assert task is not None
    unstored = copy.copy(world.workflow)
    unstored.task_edges = None
    cache.clear()
    reads = [
        # An aggregate over a whole window costs its query plus SET and RESET of its settings;
        # on SQLite the facets and the chart are one GROUP BY each.
        (pinned(3, sqlite=2), lambda: queries.jobs_facets(Q(), unit="hour")),
        # The same from the rollups (decision 0003): summary, unfolded deltas and edges in one read.
        # SQLite has no rollups: the selection is None and the read counts with the ORM.
        (
            pinned(3, sqlite=2),
            lambda: queries.jobs_facets(
                Q(), unit="hour", rollup=queries.job_rollup_selection(since, None, {})
            ),
        ),
        # A window's partial hours are scanned: one index read of the archive's horizon first says
        # whether the archived attempts must be scanned too (decision 0012).
        (
            pinned(4, sqlite=2),
            lambda: queries.errors_summary(
                Q(), unit="hour", rollup=queries.error_rollup_window(since, None, {})
            ),
        ),
        (
            pinned(4, sqlite=1),
            lambda: queries.errors_summary(
                Q(), unit="hour", split=False, rollup=queries.error_rollup_window(since, None, {})
            ),
        ),
        (1, lambda: queries.jobs_page(Q(), sort="time-descending", cursor=None, limit=3)),
        (1, lambda: queries.job_detail(pandaid)),
        (1, lambda: queries.job_attempts(pandaid)),
        (1, lambda: queries.job_status_history(pandaid)),
        (1, lambda: queries.job_files(pandaid)),
        (1, lambda: queries.job_relatives(pandaid)),
        (1, lambda: queries.job_log_chunks(pandaid, after=0, attemptnr=1)),
        (pinned(3, sqlite=2), lambda: queries.errors_summary(Q(), unit="hour")),
        (pinned(3, sqlite=1), lambda: queries.errors_summary(Q(), unit="hour", split=False)),
        # The reads below that may hold final jobs also read the archive's horizon (decision 0012).
        (5, lambda: queries.dash_matrix(since, None)),  # final jobs of the window from the rollup
        (5, lambda: queries.dash_matrix(None, None)),  # all time: final jobs from the index
        (1, lambda: queries.site_detail("CERN")),
        # The archive's horizon, then both tables from one index-only GROUP BY (on PostgreSQL
        # hashed with the aggregate's work_mem: set and reset around it).
        (pinned(4, sqlite=2), lambda: queries.site_job_stats(["CERN_Q"], since, None)),
        (1, lambda: queries.site_workers_by_state(cern)),
        (3, lambda: queries.queue_state_counts(since, None)),  # active jobs; final ones of the window
        (1, lambda: queries.queues_with_sites()),
        (2, lambda: queries.tasks_page(Q(), cursor=None, limit=10)),
        (1, lambda: queries.task_facets(Q())),
        (1, lambda: queries.task_detail(task.pk)),
        (pinned(3, sqlite=1), lambda: queries.task_top_errors(task.pk)),
        # SQLite: the task's timed jobs in one read, binned and sorted in Python.
        (pinned(3, sqlite=1), lambda: queries.task_job_profile(task)),
        (3, lambda: queries.workflows_page(Q(), cursor=None, limit=10)),
        (1, lambda: queries.workflow_detail(world.workflow.pk)),
        (2, lambda: queries.workflow_tasks(world.workflow.pk)),
        (0, lambda: queries.workflow_task_edges(world.workflow)),  # stored at submission
        (1, lambda: queries.workflow_task_edges(unstored)),  # submitted before: from the job edges
        (0, lambda: queries.workflow_task_edges(unstored)),  # cached: the graph never changes
        (2, lambda: queries.workflow_job_slice(world.workflow.pk, label="isr", data_id={}, limit=100)),
        (2, lambda: queries.latest_failures()),
        (1, lambda: queries.users_summary(since)),  # per user, summed in the statement
        (2, lambda: queries.user_tasks("alice", since)),
        (1, lambda: queries.user_last_activity("alice")),
        (1, lambda: queries.loop_strip()),  # every loop of the table, from one read of LoopStatus
    ]
    for count, read in reads:
        with django_assert_num_queries(count):
            read()


def test_job_facets_and_page_agree_with_a_plain_count(world: World) -> None:
    facets = queries.jobs_facets(Q(label="isr"), unit="hour")
    rows, cursor = queries.jobs_page(Q(label="isr"), sort="pandaid", cursor=None, limit=100)
    assert facets.total == len(rows) == 6
    assert cursor is None
    assert sum(n for _, _, n in facets.over_time) == 6


def test_a_cursor_not_made_by_the_page_is_refused() -> None:
    for bad in ("", "bm90IGpzb24=", "WzEsICJ4Il0="):  # "", "not json", [1, "x"]
        with pytest.raises(ValueError, match="cursor"):
            queries.cursor_decode(bad or "!!", "pandaid")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL session settings")
def test_the_aggregate_settings_end_with_the_query(world: World) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        before = cursor.fetchone()[0]
        queries.jobs_facets(Q(), unit="hour")
        cursor.execute("SHOW work_mem")
        assert cursor.fetchone()[0] == before
        cursor.execute("SHOW enable_indexscan")
        assert cursor.fetchone()[0] == "on"
