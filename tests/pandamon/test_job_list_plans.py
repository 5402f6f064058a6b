"""The /jobs/ list's read of a task and of a past window goes through an index that fits it (the
plans PostgreSQL chooses, with sequential scans priced out as on a big table): a task's list by
time reads `job_task_time_idx` in its order, a window long past is found through the time index
rather than by walking the primary key back from the newest job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dispatcher.models import Job
from pandamon import queries
from pandamon.queries import past_window
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres_only")]
_VARIED = {"pandaid", "name", "jeditaskid", "statechangetime"}


def _list_read(client: Any, url: str) -> tuple[str, str]:
    """The page's list read (the one selecting the job names) and its plan."""
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    (sql,) = [q["sql"] for q in ctx.captured_queries if '"dispatcher_job"."name"' in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        return sql, "\n".join(row[0] for row in cursor.fetchall())


def _list_plan(client: Any, url: str) -> str:
    return _list_read(client, url)[1]


@pytest.fixture
def jobs() -> Any:
    """20 tasks of 1,000 jobs over 10 days (copies of one factory job, in SQL: the planner needs a
    table of some size to prefer one index to another), analysed. They are written in a shuffled
    order (a fixed seed): on a real table, updates leave a row's place unrelated to its state
    time, and a table laid out in time order would make walking the time index look as cheap as
    reading the task's own rows."""
    tasks = [TaskFactory() for _ in range(20)]
    JobFactory(task=tasks[0], statechangetime=timezone.now())
    columns = [f.column for f in Job._meta.concrete_fields if f.column not in _VARIED]
    listed = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.17)")
        cursor.execute(
            f"""INSERT INTO dispatcher_job ({listed}, pandaid, name, jeditaskid, statechangetime)
                SELECT {listed}, nextval(pg_get_serial_sequence('dispatcher_job', 'pandaid')),
                       name || '-' || g, (%s::bigint[])[1 + g %% 20], now() - g * interval '43 seconds'
                FROM dispatcher_job, generate_series(1, 20000) AS g ORDER BY random()""",  # noqa: S608  (column names)
            [[t.jeditaskid for t in tasks]],
        )
        cursor.execute("ANALYZE dispatcher_job")
    return tasks[0]


def test_a_tasks_list_by_time_reads_the_task_time_index_in_order(client: Any, jobs: Any) -> None:
    plan = _list_plan(client, f"/jobs/?jeditaskid={jobs.jeditaskid}&sortby=time-descending")
    assert "job_task_time_idx" in plan, plan
    assert "Sort" not in plan, plan


def test_a_window_of_a_task_is_a_range_of_the_task_time_index(client: Any, jobs: Any) -> None:
    now = timezone.now()
    since, until = (now - timedelta(days=d) for d in (6, 5))
    url = (
        f"/jobs/?jeditaskid={jobs.jeditaskid}&date_from={since:%Y-%m-%dT%H:%M:%S}"
        f"&date_to={until:%Y-%m-%dT%H:%M:%S}"
    )
    plan = _list_plan(client, url)
    assert "job_task_time_idx" in plan, plan
    assert "statechangetime" in plan.split("job_task_time_idx", 1)[1], plan


def test_a_window_long_past_is_found_by_time_not_by_walking_the_newest_jobs(client: Any, jobs: Any) -> None:
    now = timezone.now()
    since, until = now - timedelta(days=6), now - timedelta(days=5, hours=12)
    url = f"/jobs/?date_from={since:%Y-%m-%dT%H:%M:%S}&date_to={until:%Y-%m-%dT%H:%M:%S}"
    sql, plan = _list_read(client, url)
    # The planner of a big table walks the primary key for `ORDER BY pandaid` (it cannot know the
    # window's jobs are old); `pandaid + 0` is what keeps it off it there.
    assert '("dispatcher_job"."pandaid" + 0) DESC' in sql, sql
    assert "dispatcher_job_pkey" not in plan, plan
    assert "job_window_summary_idx" in plan, plan


def test_a_recent_window_still_walks_the_newest_jobs_and_the_rule_is_its_age_against_its_length() -> None:
    now = timezone.now()
    assert not past_window(now - timedelta(hours=12), None, now)
    assert not past_window(now - timedelta(hours=12), now - timedelta(hours=1), now)
    assert past_window(now - timedelta(hours=12), now - timedelta(hours=7), now)
    assert not past_window(None, now - timedelta(days=3), now)


def test_a_queue_with_many_jobs_in_the_window_walks_its_newest_and_a_quiet_one_sorts_its_rows(
    client: Any, jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = QueueFactory().name
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dispatcher_job SET computingsite = %s", [queue])
        cursor.execute("ANALYZE dispatcher_job")
    url = f"/jobs/?hours=12&computingsite={queue}"
    in_window = Job.objects.filter(statechangetime__gte=timezone.now() - timedelta(hours=12)).count()
    assert 500 < in_window < queries.jobs.WALK_FROM_JOBS
    # Fewer jobs than the threshold: the window's rows, sorted (the primary key's order hidden).
    sql, plan = _list_read(client, url)
    assert '("dispatcher_job"."pandaid" + 0) DESC' in sql, sql
    assert "Sort Key: ((pandaid + 0)) DESC" in plan, plan
    # As many as the threshold: the queue's (queue, pandaid) index walked back from its newest,
    # nothing sorted.
    monkeypatch.setattr(queries.jobs, "WALK_FROM_JOBS", 500)
    sql, plan = _list_read(client, url)
    assert "+ 0)" not in sql, sql
    assert "Index Scan Backward using job_queue_pandaid_idx" in plan, plan
    assert "Sort" not in plan, plan
