"""Watcher benchmark: a site goes dark with N jobs running; how fast are their attempts ended?

    python bench/watcher.py [--jobs 10000] [--batch 500]

Runs against the PostgreSQL of DATABASE_URL in a scratch database it creates and drops. Steps:

1. Submit one workflow of N jobs, every tenth with one child (child i depends on parent i) — not
   timed.
2. Move the N jobs to running on one queue, their last heartbeat three hours ago (past the default
   2-hour timeout); a third of them on their last attempt — not timed.
3. Timed: the watcher loop step (`dispatcher.loops.watcher_one_batch`, bounded by `--batch`) until
   it finds no silent job. jobs_per_s = N / elapsed.
4. Check: every job's attempt ended exactly once with code 100; the jobs on their last attempt
   failed and their children pruned, the others back to `defined` on their next attempt; the
   per-task counters equal the job rows; the monitor's summaries folded from the change feed equal
   a rebuild from the job rows.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import core_loop_ms, in_scratch_test_database, rollups_exact  # noqa: E402  (bench/ is on the path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    in_scratch_test_database("watcher", lambda: run(args))


def run(args: argparse.Namespace) -> dict[str, object]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count, Q
    from django.utils import timezone

    from dispatcher.loops import watcher_one_batch
    from dispatcher.models import Job, JobAttempt, Queue, Site, TaskCount
    from dispatcher.queries import task_state_counts
    from dispatcher.services import NewJob, jobs_transition_bulk, task_counts_fold, workflow_submit

    n = args.jobs
    Queue.objects.create(name="DARK", site=Site.objects.create(name="DARK"), max_rss_mb=8000)
    owner = get_user_model().objects.create(username="bench")
    specs = [NewJob(name=f"p{i}", label="parent", command="true") for i in range(n)]
    specs += [NewJob(name=f"c{i}", label="child", command="true", parents=[f"p{i}"]) for i in range(0, n, 10)]
    wf = workflow_submit(owner=owner, name="dark-site", jobs=specs)
    parents = list(
        Job.objects.filter(workflow=wf, label="parent").order_by("pk").values_list("pk", flat=True)
    )
    for source, to, fields in (
        ("defined", "activated", {"queue_id": "DARK"}),
        ("activated", "sent", {}),
        ("sent", "running", {}),
    ):
        jobs_transition_bulk(source=source, to=to, cause="bench", pandaids=parents, fields=fields)
    silent_since = timezone.now() - dt.timedelta(hours=3)
    Job.objects.filter(pk__in=parents).update(heartbeat_at=silent_since, statechangetime=silent_since)
    last = parents[::3]
    Job.objects.filter(pk__in=last).update(attemptnr=3)

    t0, cpu0 = time.perf_counter(), time.process_time()
    ended = steps = 0
    while True:
        done = watcher_one_batch(limit=args.batch)
        if not done:
            break
        ended += done
        steps += 1
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0

    attempts = JobAttempt.objects.filter(job__workflow=wf)
    per_job = attempts.values("job").annotate(k=Count("pk"))
    children_of_last = Job.objects.filter(workflow=wf, label="child", parent_edges__parent_id__in=last)
    while task_counts_fold():
        pass
    tasks = list(wf.tasks.values_list("pk", flat=True))
    counted = task_state_counts(tasks)
    actual: dict[int, dict[str, int]] = {}
    for task_id, status, k in (
        Job.objects.filter(task_id__in=tasks).values_list("task_id", "jobstatus").annotate(k=Count("pk"))
    ):
        actual.setdefault(task_id, {})[status] = k
    checks = {
        "each_attempt_ended_once": per_job.filter(k=1).count() == n and attempts.count() == n,
        "code_100": attempts.filter(jobdispatchererrorcode=100).count() == n,
        "last_attempts_failed": Job.objects.filter(pk__in=last, jobstatus="failed").count() == len(last),
        "others_retried": Job.objects.filter(pk__in=parents, jobstatus="defined", attemptnr=2).count()
        == n - len(last),
        "children_of_failed_pruned": children_of_last.exclude(jobstatus="pruned").count() == 0
        and children_of_last.exists(),
        "counters_exact": counted == actual and TaskCount.objects.filter(~Q(count__gte=0)).count() == 0,
        "rollups_exact": rollups_exact(),
    }
    return {
        "benchmark": "watcher",
        "jobs": n,
        "jobs_ended": ended,
        "watcher_steps": steps,
        "watcher_batch": args.batch,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(ended / elapsed, 1) if elapsed else None,
        # CPU of this process only (the PostgreSQL backend's share is not included).
        "client_cpu_seconds": round(cpu, 3),
        "checks": checks,
        "exact": all(checks.values()),
        "database": connection.vendor,
        "cpu_count": os.cpu_count(),
        "core_loop_ms": round(core_loop_ms(), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
