"""DAG release benchmark: N parents finish, one child each; how fast are children activated?

    python bench/release.py [--parents 100000] [--batch 5000] [--sample 2000]

Runs against the PostgreSQL of DATABASE_URL in a scratch database it creates and drops. Steps:

1. Submit one workflow of N parents and N children (child i depends on parent i) — not timed.
2. Move the parents to running with bulk transitions — not timed. Timed: brokerage's read of
   every queue's activated and in-flight counts with the N parents running
   (`queue_weights_ms_median`, of 5 reads).
3. Finish the parents: `--sample` of them through `job_attempt_end` one by one (the pilot's final
   update: attempt row, transition, release of the child), timed and reported as a rate; the rest
   with a bulk transition and one set-based release UPDATE (not timed), so every child is released.
4. Timed: the brokerage loop step (`dispatcher.services.broker_one_batch`, bounded by `--batch`)
   until no released child is left. children_activated_per_s = N / elapsed. Target ≥ 5,000/s.
5. Check: every child activated exactly once, counters exact, and the monitor rollups exact: the
   job summary folded from the engine's change feed (every write above, by trigger or by the
   set-based transitions; decision 0006) equals a rebuild from the job rows.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import in_scratch_test_database, rollups_exact  # noqa: E402  (bench/ is on the path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parents", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args()

    in_scratch_test_database("release", lambda: run(args))


def run(args: argparse.Namespace) -> dict[str, object]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count

    from dispatcher.models import Job, JobDependency, JobStatusLog, Queue, Site
    from dispatcher.queries import task_state_counts
    from dispatcher.services import (
        NewJob,
        broker_one_batch,
        job_attempt_end,
        jobs_transition_bulk,
        workflow_submit,
    )

    n = args.parents
    Queue.objects.create(name="BENCH", site=Site.objects.create(name="BENCH"), max_rss_mb=8000)
    owner = get_user_model().objects.create(username="bench")
    jobs = [NewJob(name=f"p{i}", label="parent", command="true") for i in range(n)]
    jobs += [NewJob(name=f"c{i}", label="child", command="true", parents=[f"p{i}"]) for i in range(n)]
    t0 = time.perf_counter()
    wf = workflow_submit(owner=owner, name="release", jobs=jobs)
    submit_s = time.perf_counter() - t0
    parents = list(
        Job.objects.filter(workflow=wf, label="parent").order_by("pk").values_list("pk", flat=True)
    )
    jobs_transition_bulk(
        source="defined", to="activated", cause="bench", pandaids=parents, fields={"queue_id": "BENCH"}
    )
    jobs_transition_bulk(source="activated", to="sent", cause="bench", pandaids=parents)
    jobs_transition_bulk(source="sent", to="running", cause="bench", pandaids=parents)

    # Brokerage weighs every queue by its activated and in-flight jobs: with the N parents running,
    # what does one step's read of those numbers cost?
    from dispatcher.services.placement import _queue_infos

    weigh_ms = []
    for _ in range(5):
        t0 = time.perf_counter()
        infos = _queue_infos()
        weigh_ms.append((time.perf_counter() - t0) * 1000)
    in_flight = sum(q.in_flight for q in infos)

    sample = parents[: args.sample]
    t0 = time.perf_counter()
    for pandaid in sample:
        job_attempt_end(pandaid=pandaid, attemptnr=1, status="finished", cause="bench")
    sample_s = time.perf_counter() - t0
    rest = parents[args.sample :]
    if rest:
        jobs_transition_bulk(source="running", to="finished", cause="bench", pandaids=rest)
        children = JobDependency.objects.filter(parent_id__in=rest).values("child_id")
        Job.objects.filter(pandaid__in=children).update(pending_parents=0)

    t0, cpu0 = time.perf_counter(), time.process_time()
    activated = steps = 0
    while True:
        done = broker_one_batch(limit=args.batch)
        if not done:
            break
        activated += done
        steps += 1
    broker_s = time.perf_counter() - t0
    broker_cpu_s = time.process_time() - cpu0

    per_child = (
        JobStatusLog.objects.filter(job__workflow=wf, job__label="child", jobstatus="activated")
        .values("job")
        .annotate(k=Count("pk"))
    )
    once = per_child.filter(k=1).count()
    counts = task_state_counts(list(wf.tasks.values_list("pk", flat=True)))
    exact = rollups_exact()
    return {
        "benchmark": "release",
        "parents": n,
        "children_activated": activated,
        "children_activated_once": once,
        "counts": {str(task): c for task, c in counts.items()},
        "rollups_exact": exact,
        "brokerage_steps": steps,
        "brokerage_batch": args.batch,
        "brokerage_seconds": round(broker_s, 3),
        "children_activated_per_s": round(activated / broker_s, 1) if broker_s else None,
        # CPU of this process only (the PostgreSQL backend's share is not included): on a shared
        # machine, wall time / CPU time says how much of the step was spent waiting for a core.
        "brokerage_client_cpu_seconds": round(broker_cpu_s, 3),
        "target_per_s": 5000,
        "queue_weights_in_flight": in_flight,
        "queue_weights_ms_median": round(sorted(weigh_ms)[2], 2),
        "final_updates_sampled": len(sample),
        "final_updates_per_s": round(len(sample) / sample_s, 1) if sample_s else None,
        "submit_seconds": round(submit_s, 2),
        "database": connection.vendor,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": "figures are noisy when other work shares the machine: compare runs made back to back",
    }


if __name__ == "__main__":
    main()
