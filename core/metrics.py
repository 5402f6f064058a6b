"""Prometheus metrics: the process-local HTTP families, the loop gauges read from `LoopStatus` at
scrape time, and the assembly of one scrape (docs/operator-guide/monitoring.md#prometheus-metrics).

Two kinds of family:

* **process-local** counters and histograms, incremented where the event happens (this module's
  HTTP middleware, `dispatcher.protocol.metrics` for the pilot calls). They are created without a
  registry. Under gunicorn or Celery, `PROMETHEUS_MULTIPROC_DIR` names a directory every process
  of the host writes its values to (prometheus_client's multi-process mode, chosen when
  prometheus_client is first imported), and a scrape sums the files of all of them; without it
  (runserver, the embedded run, tests) a scrape reads the objects of its own process.
* **scrape-time** gauges, read from the database by a collector when `/metrics` is asked: jobs,
  workers, loops, the change feed's lag. They cost nothing between scrapes and are the same
  whichever process answers.

core imports no domain app: the collectors of the other apps (`dispatcher.metrics`,
`harvester.metrics`, `pandamon.metrics`) are named by the view in `config/metrics.py`, which hands
them to `scrape` with the process-local families, each scrape into a registry of its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.models import LoopStatus
from core.unavailable import discard_broken_connections, unavailable_dependency

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latency buckets (seconds): pages and API calls answer in milliseconds to a few seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "ailuro_http_requests",
    "HTTP requests answered, by URL route name and status code (the pilot protocol's calls are "
    "counted by ailuro_pilot_calls_total instead).",
    ["view", "status"],
    registry=None,
)
HTTP_SECONDS = Histogram(
    "ailuro_http_request_duration_seconds",
    "Time from the request entering the middleware chain to its response, by URL route name.",
    ["view"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
PROCESS_LOCAL: tuple[Collector, ...] = (HTTP_REQUESTS, HTTP_SECONDS)

_REQUESTS_BY_VIEW_STATUS: dict[tuple[str, int], Counter] = {}

UNRESOLVED = "<unresolved>"  # a path no route matched (a 404): one label value for all of them


def route_label(request: HttpRequest) -> str:
    """The route's name (`namespace:name`), or its pattern when unnamed: a bounded set of values,
    never the raw path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNRESOLVED
    return match.view_name or match.route or UNRESOLVED


class RequestMetricsMiddleware:
    """Counts every response by route name and status and times it (settings.MIDDLEWARE, first)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        start = time.perf_counter()
        response = self.get_response(request)
        view = route_label(request)
        HTTP_SECONDS.labels(view).observe(time.perf_counter() - start)
        key = (view, response.status_code)
        requests = _REQUESTS_BY_VIEW_STATUS.get(key)
        if requests is None:  # the first response of this route and status: bind its child once
            requests = _REQUESTS_BY_VIEW_STATUS.setdefault(key, HTTP_REQUESTS.labels(view, str(key[1])))
        requests.inc()
        return response


class LoopCollector:
    """Per loop of `core.LoopStatus`, read at scrape time (one query): the age of its last run and
    of its last successful run, the last run's duration, work done and steps, and whether it failed."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        age = GaugeMetricFamily(
            "ailuro_loop_last_run_age_seconds", "Seconds since the loop's last run finished.", labels=["loop"]
        )
        success_age = GaugeMetricFamily(
            "ailuro_loop_last_success_age_seconds",
            "Seconds since the loop's last completed (not failed) run finished.",
            labels=["loop"],
        )
        duration = GaugeMetricFamily(
            "ailuro_loop_last_duration_seconds", "Duration of the loop's last run.", labels=["loop"]
        )
        done = GaugeMetricFamily(
            "ailuro_loop_last_done",
            "Work done by the loop's last run (what its steps returned).",
            labels=["loop"],
        )
        steps = GaugeMetricFamily("ailuro_loop_last_steps", "Steps of the loop's last run.", labels=["loop"])
        failed = GaugeMetricFamily(
            "ailuro_loop_last_failed", "1 when the loop's last run raised, else 0.", labels=["loop"]
        )
        for row in loop_statuses():
            age.add_metric([row.name], (now - row.finished_at).total_seconds())
            if row.succeeded_at is not None:
                success_age.add_metric([row.name], (now - row.succeeded_at).total_seconds())
            duration.add_metric([row.name], row.duration_s)
            done.add_metric([row.name], row.done)
            steps.add_metric([row.name], row.steps)
            failed.add_metric([row.name], 1 if row.error else 0)
        yield from (age, success_age, duration, done, steps, failed)


def loop_statuses() -> list[LoopStatus]:
    """Every loop's latest run (one row per loop): the named read of the loop gauges."""
    return list(LoopStatus.objects.order_by("name"))


def multiprocess_dir() -> str:
    """The directory of prometheus_client's multi-process mode, '' when off."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


class _DatabaseCollectors:
    """The scrape-time collectors. When the database is unavailable (`core.unavailable`), the
    collector that met it and those after it are left out, without waiting for the database once
    more each, and logged; the counted families still answer, and `ailuro_metrics_collector_up`
    says which collectors were read. Any other error (a bug) propagates: a 500 with its traceback."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self.collectors = collectors

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ailuro_metrics_collector_up",
            "1 when the collector's database read succeeded in this scrape, 0 when the database was unavailable.",
            labels=["collector"],
        )
        unavailable = False
        for collector in self.collectors:
            name = type(collector).__name__
            if not unavailable:
                try:
                    families = list(collector.collect())
                except Exception as exc:
                    if unavailable_dependency(exc) is None:
                        raise
                    unavailable = True
                    discard_broken_connections()
                    log.warning(
                        "metrics: the database is unavailable (%s); database gauges left out",
                        type(exc).__name__,
                        extra={"event": "dependency.unavailable", "collector": name},
                    )
            up.add_metric([name], 0 if unavailable else 1)
            if not unavailable:
                yield from families
        yield up


def scrape(*, process_local: Sequence[Collector], collectors: Sequence[Collector]) -> bytes:
    """One scrape in the text format: the process-local families (summed over every process of
    the host in multi-process mode) and the scrape-time collectors."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in process_local:
            registry.register(metric)
    registry.register(_DatabaseCollectors(collectors))
    return generate_latest(registry)


def metrics_response(body: bytes) -> HttpResponse:
    return HttpResponse(body, content_type=CONTENT_TYPE)
