"""Cost of the Prometheus recording on the hot paths, per call: what a pilot update adds in its view
(two clock reads, one histogram observation, one counter increment, one jobs increment) and what
the HTTP middleware adds to any other request, in a single process and in prometheus_client's
multi-process mode (values in mmap'd files, as under gunicorn); and the time of one scrape.
With `--db NAME` (a database seeded by `bench/monitor.py --seed-only --db NAME`), the time of each
scrape-time collector's read instead, and the plans of the job and worker reads.

    python bench/metrics.py [N]                         # prints one JSON object
    python bench/metrics.py --db ailuro_bench_monitor   # the database reads of one scrape
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    """CPU microseconds per call (process time: a busy machine slows the clock, not the count)."""
    fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def child(n: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from core import metrics as core_metrics
    from dispatcher.protocol import metrics

    def nothing() -> None:
        start = time.perf_counter()
        try:
            pass
        finally:
            time.perf_counter() - start

    def pilot_update() -> None:
        start = time.perf_counter()
        try:
            metrics.JOBS_HEARTBEAT.inc()
        finally:
            metrics.call_record("update", 200, time.perf_counter() - start)

    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve

    request = RequestFactory().get("/jobs/")
    request.resolver_match = resolve("/jobs/")
    answer = HttpResponse()
    middleware = core_metrics.RequestMetricsMiddleware(lambda _: answer)

    base = per_call_us(nothing, n)
    return {
        "pilot_update_us": round(per_call_us(pilot_update, n) - base, 3),
        "http_request_us": round(per_call_us(lambda: middleware(request), n), 3),
        "scrape_process_local_ms": round(
            per_call_us(
                lambda: core_metrics.scrape(
                    process_local=(*core_metrics.PROCESS_LOCAL, *metrics.PROCESS_LOCAL), collectors=()
                ),
                200,
            )
            / 1000,
            3,
        ),
    }


def database_reads(db: str, repeat: int = 20) -> dict[str, object]:
    """Median milliseconds of each scrape-time collector on `db`, and the plans of the job and
    worker reads (EXPLAIN ANALYZE, buffers)."""
    import statistics

    base = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    os.environ["DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + db
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from config.metrics import scrape_collectors
    from harvester.metrics import WORKERS_BY_QUEUE_STATE_SQL
    from pandamon.queries.metrics import FINAL_WINDOW, _sql
    from pandamon.rollups import Window

    result: dict[str, object] = {"db": db}
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'dispatcher_job'")
        result["jobs"] = cursor.fetchone()[0]
        cursor.execute("SELECT COUNT(*) FROM pandamon_jobsummary")
        result["summary_rows"] = cursor.fetchone()[0]
        cursor.execute("SELECT COUNT(*) FROM harvester_worker")
        result["workers"] = cursor.fetchone()[0]
        window = Window.of(timezone.now() - FINAL_WINDOW, None)
        if window is None:
            raise ValueError("no window")
        jobs_sql, jobs_params = _sql(window)
        for name, sql, params in (
            ("jobs_plan", jobs_sql, jobs_params),
            ("workers_plan", WORKERS_BY_QUEUE_STATE_SQL, []),
        ):
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            result[name] = [row[0] for row in cursor.fetchall()]
    for collector in scrape_collectors():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            list(collector.collect())
            times.append((time.perf_counter() - start) * 1000)
        result[type(collector).__name__ + "_ms"] = round(statistics.median(times), 2)
    return result


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--db":
        print(json.dumps(database_reads(sys.argv[2]), indent=2))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    result: dict[str, object] = {"n": n}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in (("single_process", {}), ("multi_process", {"PROMETHEUS_MULTIPROC_DIR": tmp})):
            env = {**os.environ, **extra}
            if not extra:
                env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
