"""The dispatch statement's generic plan (the one every web connection runs, docs/decisions/0004)
reads the queue's activated jobs in dispatch order from `job_activated_dispatch_idx` and stops at
the jobs it takes, whatever the table's statistics say. A plan that collects every activated job
of the queue through a bitmap scan and sorts them costs a dispatch in proportion to the queue's
backlog: in a 10M-job production day that plan was chosen after an autoanalyze, and
dispatch took 4.75 PostgreSQL backends, with the backlog growing faster than it drained."""

from __future__ import annotations

import pytest
from django.db import connection

from dispatcher.models import Job
from dispatcher.services.pilot_calls import DispatchRequest, jobs_dispatch
from tests.dispatcher.protocol.conftest import activated_job
from tests.factories import QueueFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres_only")]
_VARIED = {"pandaid", "name", "computingsite", "jobstatus"}


def test_dispatch_reads_the_activated_jobs_in_dispatch_order_whatever_the_statistics() -> None:
    # 400 queues with 30,000 jobs, a third of them activated, analysed: the statistics of a table
    # where (queue, state) alone estimates a few hundred rows and the resource filters, each
    # priced as a third, leave about one.
    queues = [QueueFactory() for _ in range(400)]
    activated_job(queues[0])
    columns = ", ".join(f.column for f in Job._meta.concrete_fields if f.column not in _VARIED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO dispatcher_job ({columns}, pandaid, name, computingsite, jobstatus)
                SELECT {columns}, nextval(pg_get_serial_sequence('dispatcher_job', 'pandaid')),
                       name || '-' || g, (%s::text[])[1 + g %% 400],
                       CASE WHEN g %% 3 = 0 THEN 'activated' ELSE 'finished' END
                FROM dispatcher_job, generate_series(1, 30000) AS g""",  # noqa: S608  (column names)
            [[q.name for q in queues]],
        )
        cursor.execute("ANALYZE dispatcher_job")
    assert len(jobs_dispatch(request=DispatchRequest(queue=queues[0].name, n_jobs=1))) == 1
    with connection.cursor() as cursor:
        # The statement as this connection prepared it, explained with its generic plan.
        cursor.execute(
            "SELECT name, cardinality(parameter_types) FROM pg_prepared_statements"
            " WHERE statement LIKE '%%WITH picked AS%%'"
        )
        ((name, n_params),) = cursor.fetchall()
        cursor.execute(f"EXPLAIN EXECUTE {name}({', '.join(['NULL'] * n_params)})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    picked = plan.split("CTE picked")[1].split("CTE ")[0]
    assert "Index Scan using job_activated_dispatch_idx" in picked, plan
    assert "Sort" not in picked, plan
