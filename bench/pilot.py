"""Pilot overhead benchmark: `python bench/pilot.py [--jobs N]` prints one JSON document.

Measures, against the real server (gunicorn + PostgreSQL, a scratch database `<db>_bench_pilot`):
* per job, acquire → payload start and payload end → final report accepted, as the pilot logs
  them (median and p90 over N trivial jobs run back to back by one pilot);
* the resident memory of one idle pilot (asking an empty queue), from /proc/<pid>/status.
Targets: overhead median ≤ 200 ms per job; idle pilot ≤ 60 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

from _common import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    return base.rsplit("/", 1)[0] + "/" + base.rsplit("/", 1)[1].split("?")[0] + "_bench_pilot"


def _prepare(url: str, n_jobs: int, token_path: Path) -> str:
    """Create/migrate the scratch database, a queue with n activated jobs, and a pilot token."""
    import psycopg

    admin = url.rsplit("/", 1)[0] + "/postgres"
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')  # name derives from DATABASE_URL, not input
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("AILURO_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from core.services import token_create
    from dispatcher.models import Job, Queue, Site
    from dispatcher.services import NewJob, job_transition, workflow_submit

    call_command("migrate", verbosity=0, interactive=False)
    site, _ = Site.objects.get_or_create(name="BENCH")
    queue_name = f"BENCH_Q_{int(time.time())}"
    Queue.objects.create(name=queue_name, site=site)
    owner, _ = get_user_model().objects.get_or_create(username="bench")
    workflow = workflow_submit(
        owner=owner,
        name=queue_name,
        jobs=[NewJob(name=f"j{i}", label="bench", command="true") for i in range(n_jobs)],
    )
    for pandaid in Job.objects.filter(workflow=workflow).values_list("pandaid", flat=True):
        job_transition(pandaid=pandaid, to="activated", cause="bench", fields={"queue_id": queue_name})
    token_path.write_text(token_create(username="bench-pilot", role="pilot"))
    return queue_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    url = _database_url()
    with TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        token = tmp / "token"
        queue = _prepare(url, args.jobs, token)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "AILURO_DATA_DIR": str(tmp / "data")}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/api/v1/pilot/append_log", timeout=1)  # noqa: S310  (our loopback server)
                except urllib.error.HTTPError:
                    break  # 405 to a GET: the server is up
                except OSError:
                    time.sleep(0.1)
            pilot = [
                sys.executable,
                "-m",
                "ailuro.cli",
                "pilot",
                "--url",
                base,
                "--token-file",
                str(token),
                "--workdir",
                str(tmp / "pilot"),
            ]
            started = time.monotonic()
            run = subprocess.run(
                [*pilot, "--queue", queue, "--max-jobs", str(args.jobs)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            elapsed = time.monotonic() - started
            timings = [json.loads(m) for m in re.findall(r"done: (\{.*\})", run.stderr)]
            to_start = [t["acquire_to_start_s"] * 1000 for t in timings]
            to_report = [t["end_to_report_s"] * 1000 for t in timings]
            overhead = [a + b for a, b in zip(to_start, to_report, strict=True)]

            idle = subprocess.Popen(
                [*pilot, "--queue", "EMPTY_QUEUE", "--idle-wait", "60"],
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(5)
            status = Path(f"/proc/{idle.pid}/status").read_text()
            rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            os.killpg(idle.pid, signal.SIGTERM)
            idle.wait(timeout=30)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    def pct(values: list[float], q: float) -> float:
        return round(sorted(values)[min(len(values) - 1, int(q * len(values)))], 1)

    median = round(statistics.median(overhead), 1)
    print(
        json.dumps(
            {
                "benchmark": "pilot",
                "jobs": len(timings),
                "wall_s": round(elapsed, 2),
                "acquire_to_start_ms": {"median": pct(to_start, 0.5), "p90": pct(to_start, 0.9)},
                "end_to_report_ms": {"median": pct(to_report, 0.5), "p90": pct(to_report, 0.9)},
                "overhead_per_job_ms": {"median": median, "p90": pct(overhead, 0.9), "target": 200},
                "idle_pilot_rss_mb": round(rss_kb / 1024, 1),
                "idle_rss_target_mb": 60,
                "ok": median <= 200 and rss_kb / 1024 <= 60,
                "note": "figures are noisy when other work shares the machine: compare runs made back to back",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
