"""The dispatcher's scrape-time Prometheus collector: the lag of the change feed (core/metrics.py;
the view in config/metrics.py registers it for each scrape). The pilot calls' families are
process-local and live in `dispatcher.protocol.metrics`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from dispatcher.queries import job_change_oldest


class ChangeFeedCollector:
    """`ailuro_rollup_lag_seconds`: how far the monitor's fold is behind the change feed."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        oldest = job_change_oldest()
        lag = 0.0 if oldest is None else max(0.0, (timezone.now() - oldest).total_seconds())
        yield GaugeMetricFamily(
            "ailuro_rollup_lag_seconds",
            "Age of the oldest job change (dispatcher.JobChange) the monitor has not folded into its "
            "summaries yet; 0 when every change is folded.",
            value=lag,
        )
