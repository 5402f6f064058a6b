"""`/metrics`: every Prometheus family of ailuro in the text format
(docs/operator-guide/monitoring.md#prometheus-metrics).

This top layer names the collectors of each app, so no app registers itself anywhere and core
imports no domain app: each scrape builds its own registry from the lists below
(`core.metrics.scrape`).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.registry import Collector

from core import metrics as core_metrics
from dispatcher.metrics import ChangeFeedCollector
from dispatcher.protocol import metrics as pilot_metrics
from harvester.metrics import WorkersCollector
from pandamon.metrics import JobsCollector

# Counters and histograms incremented where things happen (summed over the host's processes in
# multi-process mode).
PROCESS_LOCAL: tuple[Collector, ...] = (*core_metrics.PROCESS_LOCAL, *pilot_metrics.PROCESS_LOCAL)


def scrape_collectors() -> list[Collector]:
    """Gauges read from the database at scrape time, one query each."""
    return [JobsCollector(), WorkersCollector(), core_metrics.LoopCollector(), ChangeFeedCollector()]


def _authorised(request: HttpRequest) -> bool:
    """With AILURO_METRICS_TOKEN set, the scraper must send `Authorization: Bearer <token>`."""
    token = str(settings.AILURO_METRICS_TOKEN)
    if not token:
        return True
    sent = request.META.get("HTTP_AUTHORIZATION", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        response = HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = core_metrics.scrape(process_local=PROCESS_LOCAL, collectors=scrape_collectors())
    return core_metrics.metrics_response(body)
