"""The harvester's Prometheus collector: live pilot workers per queue and state, read at scrape
time (core/metrics.py; the view in config/metrics.py registers it for each scrape)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.db import connection
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from harvester.models import WORKER_FINAL, WorkerStatus

LIVE_STATES = tuple(sorted(s.value for s in WorkerStatus if s not in WORKER_FINAL))

# One probe of worker_queue_status_idx per queue (index-only): the rows read are the live workers,
# whatever the number of ended ones the table keeps.
WORKERS_BY_QUEUE_STATE_SQL = f"""
    SELECT q.name, w.status, COUNT(*) FROM dispatcher_queue q
    JOIN harvester_worker w ON w.queue_id = q.id AND w.status IN ({", ".join(f"'{s}'" for s in LIVE_STATES)})
    GROUP BY 1, 2
"""  # noqa: S608  (constant state names only)


def workers_by_queue_state() -> dict[tuple[str, str], int]:
    """(queue name, worker status) → live workers (submitted or running). One query."""
    with connection.cursor() as cursor:
        cursor.execute(WORKERS_BY_QUEUE_STATE_SQL)
        return {(queue, status): int(n) for queue, status, n in cursor.fetchall()}


class WorkersCollector:
    """`ailuro_workers{queue, state}`: live pilot workers (harvester.Worker rows) per queue and state."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ailuro_workers",
            "Live pilot workers per queue and state (submitted: queued in the batch system; running).",
            labels=["queue", "state"],
        )
        for (queue, state), n in sorted(workers_by_queue_state().items()):
            family.add_metric([queue, state], n)
        yield family
