"""The monitor's Prometheus collector: jobs per queue and state, read at scrape time
(core/metrics.py; the view in config/metrics.py registers it for each scrape)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from pandamon.queries.metrics import jobs_by_queue_state


class JobsCollector:
    """`ailuro_jobs{queue, state}`: the exact number of jobs in each state per queue (one query)."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ailuro_jobs",
            "Jobs per queue and state, exact: active states from the job table's active index, "
            "final states from the monitor's summaries and unfolded change feed (queue '' for jobs "
            "never placed on a queue).",
            labels=["queue", "state"],
        )
        for (queue, state), n in sorted(jobs_by_queue_state().items()):
            family.add_metric([queue, state], n)
        yield family
