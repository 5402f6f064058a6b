"""Oversized workflow specs are refused by their computed size, fast, without holding up the
server.

Usage: python bench/spec_refusal.py [--repeat 20] [--db NAME] [--output FILE]

1. Creates (drops first) a scratch PostgreSQL database next to $DATABASE_URL's (only one a
   benchmark made: bench/_common.py `database_claim`), migrates it and takes a user token.
2. Starts gunicorn with one worker and two threads on loopback (the smallest server that can
   answer two requests at once) and warms it with one small submission.
3. POSTs each hostile spec `--repeat` times to `/api/v1/workflows/` as YAML: a compact label of
   10^12 jobs (10^6 × 10^6 data ids), one over `range: [0, 10**18]`, an `after:` between two labels
   of 90,000 jobs each (8.1 × 10^9 edges). Each answer must be 413 naming the field; server time
   is the request's wall time on loopback (no network in between), reported as p50/p95/max.
4. Meanwhile a second client polls `/healthz` and `/api/v1/ping/` on the same worker as fast as it
   can; their latency while the refusals run shows the worker is not held up.

Target: every refusal within 50 ms of server time (p95), and the other requests answered
meanwhile. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from _common import ROOT, free_port, manage, percentile, scratch_database

DATABASE = "ailuro_bench_spec_refusal"
TARGET_S = 0.050
SPECS: dict[str, tuple[str, str]] = {
    "compact_10^12_jobs": (
        "name: huge\ndimensions: {a: {range: [0, 1000000]}, b: {range: [0, 1000000]}}\n"
        "labels: {x: {command: 't {a} {b}', over: [a, b]}}\n",
        "labels.x.over",
    ),
    "range_0_10^18": (
        "name: huge\nlabels: {x: {command: 't {i}', over: {i: {range: [0, 1000000000000000000]}}}}\n",
        "labels.x.over",
    ),
    "after_8.1e9_edges": (
        "name: huge\ndimensions: {a: {range: [0, 90000]}, b: {range: [0, 90000]}}\n"
        "labels: {x: {command: 't {a}', over: [a]}, y: {command: 'u {b}', over: [b], after: [x]}}\n",
        "labels.y.after",
    ),
}
SMALL = "name: small\nlabels: {x: {command: 'true {i}', over: {i: {range: [0, 3]}}}}\n"


def poll(
    session: requests.Session, api: str, stop: threading.Event, seen: list[float], errors: list[str]
) -> None:
    """Other callers of the same worker: /healthz and the authenticated ping, alternately."""
    urls = [f"{api.removesuffix('/api/v1')}/healthz", f"{api}/ping/"]
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        reply = session.get(urls[n % 2], timeout=10)
        seen.append(time.perf_counter() - started)
        if reply.status_code != 200:
            errors.append(f"{urls[n % 2]}: {reply.status_code}")
        n += 1


def run(options: argparse.Namespace) -> dict[str, Any]:
    base_url = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    if not base_url.startswith("postgres"):
        raise SystemExit("bench/spec_refusal.py needs PostgreSQL: set DATABASE_URL=postgres://…")
    url = scratch_database(base_url, options.db)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AILURO_LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": "memory://",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    manage(env, "migrate", "--noinput")
    token = manage(env, "create_token", "--user", "bench", "--role", "user")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
        ],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        submitter, other = requests.Session(), requests.Session()
        submitter.headers.update({**headers, "Content-Type": "application/yaml"})
        other.headers.update(headers)
        deadline = time.monotonic() + 60
        while True:
            try:
                if other.get(f"{api}/ping/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        warm = submitter.post(f"{api}/workflows/", data=SMALL, timeout=60)
        if warm.status_code != 201:
            raise RuntimeError(f"the warm-up submission answered {warm.status_code}: {warm.text[:300]}")

        stop = threading.Event()
        seen: list[float] = []
        poll_errors: list[str] = []
        poller = threading.Thread(target=poll, args=(other, api, stop, seen, poll_errors), daemon=True)
        poller.start()
        results: dict[str, Any] = {}
        problems: list[str] = []
        for name, (spec, field) in SPECS.items():
            times = []
            for _ in range(options.repeat):
                started = time.perf_counter()
                reply = submitter.post(f"{api}/workflows/", data=spec, timeout=60)
                times.append(time.perf_counter() - started)
                body = reply.json()
                if reply.status_code != 413 or body.get("field") != field:
                    problems.append(f"{name}: {reply.status_code} {body}")
            results[name] = {
                "p50_ms": round(percentile(times, 0.50) * 1000, 1),
                "p95_ms": round(percentile(times, 0.95) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
            }
            if percentile(times, 0.95) > TARGET_S:
                problems.append(f"{name}: p95 {results[name]['p95_ms']} ms over {TARGET_S * 1000:.0f} ms")
        stop.set()
        poller.join(timeout=15)
        problems += poll_errors[:5]
        return {
            "bench": "spec_refusal",
            "repeat": options.repeat,
            "refusals": results,
            "other_requests_meanwhile": {
                "count": len(seen),
                "p50_ms": round(percentile(seen, 0.50) * 1000, 1) if seen else None,
                "p95_ms": round(percentile(seen, 0.95) * 1000, 1) if seen else None,
                "errors": len(poll_errors),
            },
            "server": "gunicorn, 1 worker, 2 threads; PostgreSQL on the same machine",
            "load_average": round(os.getloadavg()[0], 2),
            "target_ms": TARGET_S * 1000,
            "problems": problems,
            "pass": not problems and len(seen) > 0,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--db", default=DATABASE, help="scratch database (created, or dropped and made afresh)"
    )
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    options = parser.parse_args()
    if options.repeat < 1:
        parser.error("--repeat must be positive")
    result = run(options)
    text = json.dumps(result, indent=2)
    print(text)
    if options.output:
        options.output.write_text(text + "\n")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
