"""Monitor benchmark on SQLite, the embedded run's database: seed N jobs with the ORM into a fresh
SQLite file, then measure server time per page with `bench/monitor.py`'s `measure` (same pages,
same JSON). On SQLite there are no rollups (decision 0003): every window is an exact scan, so this
says up to which size the embedded run stays pleasant.

    python bench/monitor_embedded.py                   # 100,000 jobs over 3 days
    python bench/monitor_embedded.py --jobs 20000 --requests 5

The shape follows bench/monitor.py, scaled down: 25 sites, 100 queues, 200 tasks (the first one
holds a fifth of the jobs), ~5 % failed jobs with one failed attempt each, diags from the same
families. The database lives in a temporary directory (`--data-dir` to keep it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from monitor import FAILURES, N_QUEUES, REGIONS, measure  # noqa: E402  (after the path set-up)

N_TASKS = 200


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000, help="jobs to seed (default 100,000)")
    p.add_argument("--days", type=int, default=3, help="days the jobs span (default 3)")
    p.add_argument("--data-dir", default="", help="keep the SQLite file here (default: a temporary dir)")
    p.add_argument("--only", default="", help="measure only pages whose URL contains this text")
    p.add_argument("--requests", type=int, default=10, help="requests per page (default 10)")
    return p.parse_args()


def seed(args: argparse.Namespace) -> dict[str, object]:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from dispatcher.models import Job, JobAttempt, Queue, Site, Task, Workflow

    rng = random.Random(7)
    t0 = time.monotonic()
    now = datetime.now(UTC)
    with transaction.atomic():
        sites = [
            Site.objects.create(name=f"SITE_{i:02d}", region=REGIONS[i % len(REGIONS)]) for i in range(25)
        ]
        queues = [
            Queue.objects.create(name=f"Q_{i:03d}", site=sites[i % len(sites)], max_cores=8)
            for i in range(N_QUEUES)
        ]
        users = [get_user_model().objects.create(username=f"user{i:02d}") for i in range(10)]
        workflows = [
            Workflow.objects.create(name=f"campaign-{i}", owner=users[i % len(users)], status="running")
            for i in range(N_TASKS // 10)
        ]
        labels = ("isr", "calib", "coadd", "measure", "forced", "diff", "assoc", "skymap", "qa", "export")
        tasks = Task.objects.bulk_create(
            [
                Task(
                    workflow=workflows[i // 10],
                    label=labels[i % 10],
                    name=f"campaign-{i // 10}/{labels[i % 10]}",
                    username=users[(i // 10) % len(users)].username,
                    status="running",
                )
                for i in range(N_TASKS)
            ]
        )
        jobs: list[Job] = []
        failed: list[tuple[int, int, str, str, datetime]] = []
        for pandaid in range(1, args.jobs + 1):
            task = tasks[0] if rng.random() < 0.2 else tasks[rng.randrange(1, N_TASKS)]
            age = timedelta(seconds=rng.uniform(0, args.days * 86400))
            end = now - age
            start = end - timedelta(seconds=rng.uniform(60, 7200))
            r = rng.random()
            status = "failed" if r < 0.05 else "running" if r < 0.10 else "finished"
            queue = queues[(pandaid * 7 + task.pk) % N_QUEUES]
            errors: dict[str, object] = {}
            if status == "failed":
                family, code, text = FAILURES[rng.randrange(len(FAILURES))]
                diag = text.format(
                    n=rng.randrange(1000),
                    site=queue.site.name.lower(),
                    s=rng.randrange(9999),
                    k=rng.randrange(10**7),
                    h=f"{rng.getrandbits(32):x}",
                )
                errors = {f"{family}errorcode": code, f"{family}errordiag": diag}
                failed.append((pandaid, code, family, diag, end))
            jobs.append(
                Job(
                    pandaid=pandaid,
                    task=task,
                    workflow_id=task.workflow_id,
                    name=f"{task.label}_{pandaid}",
                    label=task.label,
                    jobstatus=status,
                    queue=queue,
                    produsername=task.username,
                    creationtime=start,
                    statechangetime=start if status == "running" else end,
                    starttime=start,
                    endtime=None if status == "running" else end,
                    max_rss_kb=rng.randrange(200_000, 4_000_000),
                    cpu_time_s=(end - start).total_seconds() * rng.uniform(0.5, 1.0),
                    node=f"wn{rng.randrange(200)}.{queue.site.name.lower()}.example.org",
                    **errors,
                )
            )
        Job.objects.bulk_create(jobs, batch_size=5000)
        JobAttempt.objects.bulk_create(
            [
                JobAttempt(
                    job_id=pandaid,
                    task_id=jobs[pandaid - 1].task_id,
                    attemptnr=1,
                    jobstatus="failed",
                    queue=jobs[pandaid - 1].queue_id or "",
                    endtime=end,
                    **{f"{family}errorcode": code, f"{family}errordiag": diag},
                )
                for pandaid, code, family, diag, end in failed
            ],
            batch_size=5000,
        )
        with connection.cursor() as cur:
            cur.execute("DELETE FROM dispatcher_taskcountdelta")
            cur.execute("DELETE FROM dispatcher_taskcount")
            cur.execute(
                """INSERT INTO dispatcher_taskcount (jeditaskid, jobstatus, count)
                   SELECT jeditaskid, jobstatus, COUNT(*) FROM dispatcher_job GROUP BY 1, 2"""
            )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return {"jobs": args.jobs, "failed_attempts": len(failed), "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    args = parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="ailuro-bench-embedded-")
    os.environ["AILURO_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = f"sqlite:///{Path(data_dir) / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("AILURO_LOG_LEVEL", "WARNING")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    seeded = seed(args)
    print(json.dumps({"seed": seeded}), file=sys.stderr, flush=True)
    pages = measure(args)
    print(
        json.dumps(
            {
                "database": "sqlite",
                "days": args.days,
                "requests_per_page": args.requests,
                "seed": seeded,
                "pages": pages,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
