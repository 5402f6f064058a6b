"""The harvester's Prometheus collector: pilot workers per queue and state, read at scrape time
(core/metrics.py; the view in config/metrics.py registers it for each scrape)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.db import connection
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

WORKERS_BY_QUEUE_STATE_SQL = """
    SELECT q.name, w.status, w.n FROM (
        SELECT queue_id, status, COUNT(*) AS n FROM harvester_worker GROUP BY 1, 2
    ) w JOIN dispatcher_queue q ON q.id = w.queue_id
"""


def workers_by_queue_state() -> dict[tuple[str, str], int]:
    """(queue name, worker status) → workers: one GROUP BY over worker_queue_status_idx (index-only
    on PostgreSQL), joined to the few queue names afterwards. One query."""
    with connection.cursor() as cursor:
        cursor.execute(WORKERS_BY_QUEUE_STATE_SQL)
        return {(queue, status): int(n) for queue, status, n in cursor.fetchall()}


class WorkersCollector:
    """`ailuro_workers{queue, state}`: pilot workers (harvester.Worker rows) per queue and state."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ailuro_workers",
            "Pilot workers per queue and state (submitted, running, finished, failed, cancelled, missed).",
            labels=["queue", "state"],
        )
        for (queue, state), n in sorted(workers_by_queue_state().items()):
            family.add_metric([queue, state], n)
        yield family
