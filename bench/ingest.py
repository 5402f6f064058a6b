"""Workflow ingest benchmark: submit big DAGs through the REST API and time until they are queryable.

Usage: python bench/ingest.py [--quick] [--output FILE]

1. Creates (drops first) a scratch PostgreSQL database next to $DATABASE_URL's, migrates it and
   loads the demo queues, so the queue check runs as in production.
2. For each scenario, starts a fresh gunicorn (one worker, one thread) on loopback, POSTs the spec,
   then GETs the per-label report and checks every job is counted: "submitted and queryable" is
   the time from the first byte sent to the report in hand.
3. Reads the worker's peak RSS (VmHWM) after the scenario, and the CPU seconds the worker and
   its PostgreSQL backend spent on it (on a shared machine these say more than wall time does),
   then stops the server.

Scenarios: a DC2-step1-like DAG (11,461 jobs in 5 labels: 73 visits x 39 detectors through
isr → characterizeImage → calibrate → writeSourceTable, gathered per visit by
transformSourceTable) in the compact and the explicit form, and a 100,000-job DAG of the same
shape (800 visits x 31 detectors) in both forms. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from _common import backend_pids, cpu_seconds, free_port, manage, peak_rss_mb, scratch_database, worker_pid

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "ailuro_bench_ingest"
LABELS = ["isr", "characterizeImage", "calibrate", "writeSourceTable"]


def compact_spec(name: str, visits: int, detectors: int) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    previous = None
    for label in LABELS:
        labels[label] = {
            "command": f"pipetask run -t {label} -d 'visit={{visit}} AND detector={{detector}}'",
            "over": ["visit", "detector"],
            **({"after": [previous]} if previous else {}),
        }
        previous = label
    labels["transformSourceTable"] = {
        "command": "pipetask run -t transformSourceTable -d 'visit={visit}'",
        "over": ["visit"],
        "after": [previous],
    }
    return {
        "name": name,
        "dimensions": {"visit": {"range": [100000, 100000 + visits]}, "detector": {"range": [0, detectors]}},
        "defaults": {"resources": {"memory_mb": 2000, "walltime_s": 3600}},
        "labels": labels,
    }


def explicit_spec(name: str, visits: int, detectors: int) -> dict[str, Any]:
    """The same DAG spelled out job by job, as a BPS-generated submission would be."""
    jobs: list[dict[str, Any]] = []
    for v in range(100000, 100000 + visits):
        for d in range(detectors):
            previous = None
            for label in LABELS:
                job_name = f"{label}_{v}_{d}"
                jobs.append(
                    {
                        "name": job_name,
                        "label": label,
                        "command": f"pipetask run -t {label} -d 'visit={v} AND detector={d}'",
                        "depends_on": [previous] if previous else [],
                        "data_id": {"visit": v, "detector": d},
                        "resources": {"memory_mb": 2000},
                    }
                )
                previous = job_name
        jobs.append(
            {
                "name": f"transformSourceTable_{v}",
                "label": "transformSourceTable",
                "command": f"pipetask run -t transformSourceTable -d 'visit={v}'",
                "depends_on": [f"writeSourceTable_{v}_{d}" for d in range(detectors)],
                "data_id": {"visit": v},
            }
        )
    return {"name": name, "jobs": jobs}


def run_scenario(
    env: dict[str, str], admin_url: str, token: str, name: str, spec: dict[str, Any], expected_jobs: int
) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "1", "--timeout", "300",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(f"{base}/ping/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        worker = worker_pid(server.pid)
        rss_before = peak_rss_mb(worker)
        backends = backend_pids(admin_url, DATABASE)
        cpu_before = {pid: cpu_seconds(pid) for pid in [worker, *backends]}
        load_before = os.getloadavg()[0]
        body = json.dumps(spec).encode()
        started = time.monotonic()
        response = session.post(
            f"{base}/workflows/", data=body, headers={"Content-Type": "application/json"}, timeout=300
        )
        submitted = time.monotonic()
        response.raise_for_status()
        workflow_id = response.json()["id"]
        report = session.get(f"{base}/workflows/{workflow_id}/report/", timeout=60).json()
        queryable = time.monotonic()
        counted = report["total"]["total"]
        if counted != expected_jobs:
            raise RuntimeError(f"{name}: report counts {counted} jobs, expected {expected_jobs}")
        page = session.get(
            f"{base}/jobs/",
            params={"workflow": workflow_id, "jobstatus": "defined", "limit": 100},
            timeout=60,
        )
        page.raise_for_status()
        cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
        return {
            "scenario": name,
            "jobs": expected_jobs,
            "labels": len(report["labels"]),
            "tasks": sum(len(row["jeditaskids"]) for row in report["labels"]),
            "spec_bytes": len(body),
            "submit_s": round(submitted - started, 3),
            "submitted_and_queryable_s": round(queryable - started, 3),
            "jobs_per_s": round(expected_jobs / (queryable - started)),
            "server_cpu_s": round(cpu[worker], 2),
            "postgres_cpu_s": round(sum(v for pid, v in cpu.items() if pid != worker), 2),
            "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "server_rss_before_mb": round(rss_before, 1),
            "server_peak_rss_mb": round(peak_rss_mb(worker), 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the DC2-step1-like scenarios")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    url = scratch_database(base_url, DATABASE)
    admin_url = urlunsplit(urlsplit(base_url)._replace(path="/postgres"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AILURO_LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": "memory://",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    manage(env, "migrate", "--noinput")
    manage(env, "load_queues", str(ROOT / "embedded" / "demo" / "queues.yaml"))
    token = manage(env, "create_token", "--user", "bench", "--role", "user")

    scenarios = [
        ("dc2-step1 compact", compact_spec("dc2-step1", 73, 39), 11_461),
        ("dc2-step1 explicit", explicit_spec("dc2-step1", 73, 39), 11_461),
    ]
    if not args.quick:
        scenarios += [
            ("100k compact", compact_spec("big", 800, 31), 100_000),
            ("100k explicit", explicit_spec("big", 800, 31), 100_000),
        ]
    results = [run_scenario(env, admin_url, token, name, spec, n) for name, spec, n in scenarios]
    document = {
        "benchmark": "ingest",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "server": "gunicorn, 1 worker, 1 thread; PostgreSQL on the same machine",
        "targets_s": {"dc2-step1": 3.0, "100k": 15.0},
        "results": results,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
