"""The named read of the `ailuro_jobs` Prometheus gauge (pandamon/metrics.py): jobs per queue and
state, exact, without scanning the job table.

On PostgreSQL one statement, so one snapshot:

* jobs in a non-final state, counted from the partial index of active jobs per queue
  (`job_active_queue_idx`, index-only; what `/dash/` counts): the rows read are the active jobs,
  a few per cent of the table;
* jobs in a final state, summed over every hour of the summary's `computingsite` facet plus the
  change rows not folded yet (decision 0003): the rows read are the summary's, one per hour, final
  state and queue, never the jobs.

A job moving from running to finished commits its row and its change row together, so the
statement sees it on exactly one side. On SQLite (the embedded run, no summaries) one ORM GROUP BY.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connection
from django.db.models import Count

from dispatcher.models import Job
from dispatcher.states import JOB_FINAL, JOB_NON_FINAL

_ACTIVE = ", ".join(f"'{s.value}'" for s in sorted(JOB_NON_FINAL))  # literals: the index predicate
_FINAL = ", ".join(f"'{s.value}'" for s in sorted(JOB_FINAL))

JOBS_BY_QUEUE_STATE_SQL = f"""
    SELECT queue, jobstatus, SUM(n)::bigint FROM (
        SELECT COALESCE(computingsite, '') AS queue, jobstatus, COUNT(*) AS n FROM dispatcher_job
        WHERE jobstatus IN ({_ACTIVE}) GROUP BY 1, 2
        UNION ALL
        SELECT value, jobstatus, count FROM pandamon_jobsummary
        WHERE facet = 'computingsite' AND jobstatus IN ({_FINAL})
        UNION ALL
        SELECT computingsite, jobstatus, delta FROM dispatcher_jobchange WHERE jobstatus IN ({_FINAL})
    ) t GROUP BY 1, 2 HAVING SUM(n) <> 0
"""  # noqa: S608  (constant state names only)


def jobs_by_queue_state() -> dict[tuple[str, str], int]:
    """(queue, jobstatus) → jobs, every job counted once; queue '' for a job without one. One query."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(JOBS_BY_QUEUE_STATE_SQL)
            return {(queue, status): int(n) for queue, status, n in cursor.fetchall()}
    rows: list[Mapping[str, Any]] = list(
        Job.objects.order_by().values("queue_id", "jobstatus").annotate(n=Count("*"))
    )
    return {(row["queue_id"] or "", row["jobstatus"]): row["n"] for row in rows}
