"""The monitor's Prometheus collector: jobs per queue and state, read at scrape time
(core/metrics.py; the view in config/metrics.py registers it for each scrape)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from dispatcher.states import JOB_FINAL
from pandamon.queries.metrics import jobs_by_queue_state

_FINAL = frozenset(s.value for s in JOB_FINAL)


class JobsCollector:
    """`ailuro_jobs{queue, state}`: jobs now in each non-final state; and
    `ailuro_jobs_final_last_hour{queue, state}`: jobs that reached each final state in the last
    hour. Exact, one query."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "ailuro_jobs",
            "Jobs now in each non-final state per queue, exact (queue '' for jobs not placed on one).",
            labels=["queue", "state"],
        )
        final = GaugeMetricFamily(
            "ailuro_jobs_final_last_hour",
            "Jobs that reached each final state in the last hour (by state-change time) per queue, exact.",
            labels=["queue", "state"],
        )
        for (queue, state), n in sorted(jobs_by_queue_state(now=timezone.now()).items()):
            (final if state in _FINAL else active).add_metric([queue, state], n)
        yield from (active, final)
