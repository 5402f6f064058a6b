"""The named read of the `ailuro_jobs` and `ailuro_jobs_final_last_hour` Prometheus gauges
(pandamon/metrics.py): jobs per queue and state, exact, without scanning the job table, at a cost
that does not grow with the database's history.

On PostgreSQL one statement, so one snapshot:

* jobs now in a non-final state, counted from the partial index of active jobs per queue
  (`job_active_queue_idx`, index-only; what `/dash/` counts): the rows read are the active jobs,
  a few per cent of the table;
* jobs that reached a final state in the last hour (by state-change time) and are still in it, as
  `/dash/` counts a window (decision 0003): the partial hour at the window's start scanned from
  the covering `job_window_summary_idx`, the current hour from the summary's `computingsite`
  facet plus the change rows not folded yet.

A job moving from running to finished commits its row and its change row together, so the
statement sees it on exactly one side. On SQLite (the embedded run, no summaries) one ORM GROUP BY.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q

from dispatcher.models import Job
from dispatcher.states import JOB_FINAL, JOB_NON_FINAL
from pandamon.rollups import Window

FINAL_WINDOW = timedelta(hours=1)
_ACTIVE = ", ".join(f"'{s.value}'" for s in sorted(JOB_NON_FINAL))  # literals: the index predicate
_FINAL = ", ".join(f"'{s.value}'" for s in sorted(JOB_FINAL))


def _sql(window: Window) -> tuple[str, list[Any]]:
    edge_where, edge_params = window.edges_sql("statechangetime")
    hours_where, hours_params = window.hours_sql("bucket")
    delta_where, delta_params = window.hours_sql("statechangetime")
    sql = f"""
        SELECT queue, jobstatus, SUM(n)::bigint FROM (
            SELECT COALESCE(computingsite, '') AS queue, jobstatus, COUNT(*) AS n FROM dispatcher_job
            WHERE jobstatus IN ({_ACTIVE}) GROUP BY 1, 2
            UNION ALL
            SELECT COALESCE(computingsite, ''), jobstatus, COUNT(*) FROM dispatcher_job
            WHERE {edge_where} AND jobstatus IN ({_FINAL}) GROUP BY 1, 2
            UNION ALL
            SELECT value, jobstatus, count FROM pandamon_jobsummary
            WHERE {hours_where} AND facet = 'computingsite' AND jobstatus IN ({_FINAL})
            UNION ALL
            SELECT computingsite, jobstatus, delta FROM dispatcher_jobchange
            WHERE {delta_where} AND jobstatus IN ({_FINAL})
        ) t GROUP BY 1, 2 HAVING SUM(n) <> 0
    """  # noqa: S608  (constant state names and placeholders only)
    return sql, [*edge_params, *hours_params, *delta_params]


def jobs_by_queue_state(*, now: datetime) -> dict[tuple[str, str], int]:
    """(queue, jobstatus) → jobs: every job in a non-final state, and the jobs that reached a final
    state since `now` − FINAL_WINDOW; queue '' for a job without one. One query."""
    since = now - FINAL_WINDOW
    if connection.vendor == "postgresql":
        window = Window.of(since, None)
        if window is None:  # never: an open window always holds its current hour
            raise ValueError(f"no rollup window from {since}")
        sql, params = _sql(window)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {(queue, status): int(n) for queue, status, n in cursor.fetchall()}
    selected = Q(jobstatus__in=[s.value for s in JOB_NON_FINAL]) | Q(
        jobstatus__in=[s.value for s in JOB_FINAL], statechangetime__gte=since
    )
    rows: list[Mapping[str, Any]] = list(
        Job.objects.filter(selected).order_by().values("queue_id", "jobstatus").annotate(n=Count("*"))
    )
    return {(row["queue_id"] or "", row["jobstatus"]): row["n"] for row in rows}
