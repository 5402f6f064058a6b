"""Archive benchmark: the job archive move (dispatcher/services/archive.py) on about 1,000,000 final
jobs, with every monitor count family's `?json` recorded before and after and compared, and the
locks taken on the live job table sampled from a second connection during the move.

    flock /tmp/ailuro-heavy.lock nice -n 5 python bench/archive.py            # seed 1.05M, move
    python bench/archive.py --jobs 200000 --db ailuro_bench_archive_small

Seeds with bench/monitor.py's world (same shape) in its own scratch database (`--db`, always seeded
afresh: the move empties the live tables). The seeded workflows whose jobs are all final are then
marked ended (`finished`, `ended_at` their last job's state change), and the move runs as the
janitor runs it, with `now` far enough ahead that every ended workflow is past
AILURO_JOB_ARCHIVE_AFTER_DAYS. Prints JSON: jobs and workflows moved, seconds, jobs/s, the lock
modes seen on dispatcher_job (the strongest must be at most ROW EXCLUSIVE), the pages compared
and whether every one read the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# PostgreSQL's table lock modes, weakest first.
LOCK_ORDER = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
ALLOWED = "RowExclusiveLock"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1_050_000, help="jobs to seed (default 1.05M: ~1M final)")
    p.add_argument("--days", type=int, default=10, help="days the jobs span (default 10)")
    p.add_argument(
        "--db", default="ailuro_bench_archive", help="scratch database (dropped and seeded afresh)"
    )
    p.add_argument("--workflows-per-batch", type=int, default=20, help="workflows per move transaction")
    p.add_argument(
        "--base-url", default=os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    )
    return p.parse_args()


def pages_json(big_task: int, workflow: int) -> dict[str, object]:
    """Every monitor count family's `?json`, over a window holding every seeded job (and so, after
    the move, the archive): jobs (rollup and scanned), errors, dash, sites, overview, tasks,
    workflows, users, a task and a workflow page. Loop lags and generation times left out."""
    from django.test import Client

    client = Client()
    urls = [
        "/jobs/?json&days=30",
        "/jobs/?json&days=30&jobstatus=failed",
        "/jobs/?json&days=30&computingsite=Q_007",
        "/jobs/?json&days=30&sortby=time-ascending&display_limit=50",
        "/errors/?json&days=30",
        "/errors/?json&days=30&computingsite=Q_007",
        "/dash/?json&days=30",
        "/sites/?json&days=30",
        "/?json&days=30",
        "/tasks/?json",
        "/workflows/?json",
        "/users/?json&days=30",
        f"/task/{big_task}/?json",
        f"/workflow/{workflow}/?json",
        f"/jobs/?json&jeditaskid={big_task}",
    ]
    out: dict[str, object] = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        page = response.json()
        for volatile in ("loops", "generated"):
            page.pop(volatile, None)
        out[url] = page
    return out


class LockSampler(threading.Thread):
    """Polls pg_locks from its own connection: the lock modes other sessions hold or wait for on
    dispatcher_job, and how many samples were taken."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.modes: dict[str, int] = {}
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'dispatcher_job' AND l.pid <> pg_backend_pid()"
                ).fetchall()
                for (mode,) in rows:
                    self.modes[mode] = self.modes.get(mode, 0) + 1
                self.samples += 1
                time.sleep(0.005)


def main() -> None:
    args = parse_args()
    import monitor  # bench/monitor.py: the same world

    args.reseed = True
    monitor.setup_django(args)
    seeded = monitor.seed(args)
    print(json.dumps({"seed": seeded}), file=sys.stderr, flush=True)

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from dispatcher.models import ArchivedJob, Job, Task
    from dispatcher.services.archive import jobs_archive_move
    from pandamon.rollups import rollups_fold

    with connection.cursor() as cur:
        # Workflows whose every job is final have ended: when their last job did.
        cur.execute(
            """UPDATE dispatcher_workflow w SET status = 'finished', ended_at = e.last
               FROM (SELECT workflow_id, MAX(statechangetime) AS last FROM dispatcher_job
                     GROUP BY workflow_id
                     HAVING bool_and(jobstatus IN ('finished', 'failed', 'cancelled', 'closed', 'pruned'))) e
               WHERE w.id = e.workflow_id"""
        )
        ended = cur.rowcount
        cur.execute("ANALYZE")
    rollups_fold()
    big = Task.objects.order_by("jeditaskid").first()
    assert big is not None
    before = pages_json(big.jeditaskid, big.workflow_id)
    live_before = Job.objects.count()

    base = args.base_url.rsplit("/", 1)[0]
    sampler = LockSampler(f"{base}/{args.db}")
    sampler.start()
    days = int(settings.AILURO["JOB_ARCHIVE_AFTER_DAYS"]) or 30
    settings.AILURO["JOB_ARCHIVE_AFTER_DAYS"] = days
    now = timezone.now() + timedelta(days=days + 1)  # every ended workflow is past the cut-off
    t0 = time.monotonic()
    moved = jobs_archive_move(now=now, max_jobs=10**9, workflows_per_batch=args.workflows_per_batch)
    seconds = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()

    rollups_fold()  # nothing to fold: the move appended no change
    after = pages_json(big.jeditaskid, big.workflow_id)
    differing = [url for url in before if before[url] != after[url]]
    strongest = max(sampler.modes, key=LOCK_ORDER.index, default=None)
    result = {
        "jobs_seeded": args.jobs,
        "workflows_ended": ended,
        "workflows_moved": moved.workflows,
        "jobs_moved": moved.jobs,
        "jobs_live_before": live_before,
        "jobs_live_after": Job.objects.count(),
        "jobs_archived": ArchivedJob.objects.count(),
        "seconds": round(seconds, 1),
        "jobs_per_s": round(moved.jobs / seconds) if seconds else None,
        "workflows_per_batch": args.workflows_per_batch,
        "lock_samples": sampler.samples,
        "locks_on_dispatcher_job": sampler.modes,
        "strongest_lock": strongest,
        "lock_ok": strongest is None or LOCK_ORDER.index(strongest) <= LOCK_ORDER.index(ALLOWED),
        "pages_compared": len(before),
        "pages_identical": not differing,
        "pages_differing": differing,
    }
    print(json.dumps(result, indent=1))
    if differing or not result["lock_ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
