"""Monitor benchmark: seed PostgreSQL with N jobs (default 10,000,000: 1M/day over 10 days, 100
queues, 2,000 tasks, realistic failures) using COPY, then measure server time per page.

    python bench/monitor.py                       # seed (if needed) 10M jobs and measure
    python bench/monitor.py --jobs 1000000        # a smaller world (same shape, fewer jobs per day)
    python bench/monitor.py --reseed --requests 30

"Server time" is the time Django takes to answer the request in-process (view, queries, template),
measured with the test client: no network, no browser. Prints JSON (one entry per page with p50,
p95, max in ms and the number of SQL queries). Uses its own database (`--db`), created if missing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIG_TASK_JOBS = 80_000
N_QUEUES = 100
N_TASKS = 2_000
N_USERS = 40
TASKS_PER_WORKFLOW = 10
REGIONS = ("CERN", "US", "UK", "FR", "DE", "IT", "NL", "ES", "CA", "JP")
FAILURES = (
    ("pilot", 1201, "Lost heartbeat from wn{n}.{site}.example.org after {s} s"),
    ("pilot", 1099, "Stage-in failed: /data/{site}/raw/file_{n}.fits not found"),
    ("pilot", 1305, "Payload ran out of walltime after {s} s on wn{n}.{site}.example.org"),
    ("exe", 137, "Payload killed: RSS {k} kB above limit in /scratch/job_{n}/work"),
    ("exe", 1, "pipetask failed: ValueError: bad pixel mask for visit {n}"),
    ("exe", 139, "Segmentation fault in libafw.so at 0x{h}"),
    ("ddm", 200, "Output registration failed for /butler/{site}/run_{n}: timeout after {s} s"),
    ("sup", 9000, "Killed by the supervisor: walltime {s} s exceeded"),
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000_000, help="jobs to seed (default 10M)")
    p.add_argument("--days", type=int, default=10, help="days the jobs span (default 10)")
    p.add_argument("--db", default="ailuro_bench_monitor", help="database name (created if missing)")
    p.add_argument("--reseed", action="store_true", help="drop and re-seed even if already seeded")
    p.add_argument("--seed-only", action="store_true", help="seed and stop")
    p.add_argument("--only", default="", help="measure only pages whose URL contains this text")
    p.add_argument("--requests", type=int, default=20, help="requests per page (default 20)")
    p.add_argument("--readers", type=int, default=0, help="then N concurrent readers cycling the pages")
    p.add_argument("--duration", type=float, default=60.0, help="seconds the concurrent readers run")
    p.add_argument(
        "--base-url", default=os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    )
    return p.parse_args()


def setup_django(args: argparse.Namespace) -> None:
    from _common import database_claim

    base = args.base_url.rsplit("/", 1)[0]
    # An existing database is reused (seeded if it is not yet) or, with --reseed, dropped: only one
    # a benchmark created; anything else stops here untouched.
    database_claim(f"{base}/postgres", args.db, drop=args.reseed)
    os.environ["DATABASE_URL"] = f"{base}/{args.db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("AILURO_LOG_LEVEL", "WARNING")
    os.environ["ALLOWED_HOSTS"] = "testserver"  # the in-process test client's host
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _copy(cursor, table: str, columns: list[str], lines) -> None:  # type: ignore[no-untyped-def]
    """COPY text-format lines (already tab-separated) into `table`, in 8 MB blocks."""
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buf = io.StringIO()
        for line in lines:
            buf.write(line)
            if buf.tell() > 8_000_000:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())


def _job_columns() -> tuple[list[str], dict[str, str]]:
    """Every NOT NULL column of dispatcher_job with its COPY text default (Django defaults are not
    database defaults, so COPY must name them all)."""
    from dispatcher.models import Job

    defaults: dict[str, str] = {}
    for f in Job._meta.concrete_fields:
        if f.null:
            continue
        d = f.get_default()
        if isinstance(d, dict):
            defaults[f.column] = "{}"
        elif d is None or d == "":
            defaults[f.column] = ""
        else:
            defaults[f.column] = str(d)
    return list(defaults), defaults


def seed(args: argparse.Namespace) -> dict[str, object]:
    """1. Sites, queues, users, workflows, tasks with the ORM. 2. Drop the job indexes, COPY the
    jobs (one big task of 80k jobs with a 3-label DAG, the rest spread over the other tasks),
    failed attempts and DAG edges, with the job table's triggers disabled. 3. Rebuild the
    indexes, fill the task and queue counters (`queue_counts_rebuild`) and the monitor rollups
    (`rollups_rebuild`: the migration's backfill), ANALYZE."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from dispatcher.models import Job, Queue, Site, Task, Workflow
    from dispatcher.services import queue_counts_rebuild
    from pandamon.rollups import rollups_rebuild

    if Job.objects.exists():
        return {"seeded": False, "jobs": Job.objects.count()}
    rng = random.Random(7)
    t0 = time.monotonic()
    sites = [Site.objects.create(name=f"SITE_{i:02d}", region=REGIONS[i % len(REGIONS)]) for i in range(25)]
    queues = [
        Queue.objects.create(name=f"Q_{i:03d}", site=sites[i % len(sites)], max_cores=8)
        for i in range(N_QUEUES)
    ]
    User = get_user_model()
    users = [User.objects.create(username=f"user{i:02d}") for i in range(N_USERS)]
    workflows = [
        Workflow.objects.create(name=f"campaign-{i}", owner=users[i % N_USERS], status="running")
        for i in range(N_TASKS // TASKS_PER_WORKFLOW)
    ]
    labels = ("isr", "calib", "coadd", "measure", "forced", "diff", "assoc", "skymap", "qa", "export")
    tasks = Task.objects.bulk_create(
        [
            Task(
                workflow=workflows[i // TASKS_PER_WORKFLOW],
                label=labels[i % TASKS_PER_WORKFLOW],
                name=f"campaign-{i // TASKS_PER_WORKFLOW}/{labels[i % TASKS_PER_WORKFLOW]}",
                username=users[(i // TASKS_PER_WORKFLOW) % N_USERS].username,
                status="running",
            )
            for i in range(N_TASKS)
        ]
    )
    task_ids = [t.jeditaskid for t in tasks]
    big_task = tasks[0]  # workflow 0: isr (80k) -> calib (20k) -> coadd (1k)
    calib_task, coadd_task = tasks[1], tasks[2]

    columns, defaults = _job_columns()
    with connection.cursor() as cur:
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dispatcher_job' AND indexname NOT LIKE '%%pkey'"
        )
        index_defs = cur.fetchall()
        # Foreign keys are checked row by row at the end of a COPY (10M queued trigger events);
        # re-adding them afterwards validates all rows in one join instead.
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'dispatcher_job'::regclass AND contype = 'f'"
        )
        fk_defs = cur.fetchall()
        for name, _ in fk_defs:
            cur.execute(f'ALTER TABLE dispatcher_job DROP CONSTRAINT "{name}"')
        # The change-feed triggers (decision 0006) would append 10M job and 1M attempt changes; the
        # rollups are built afterwards in one pass each by the monitor's backfill (`rollups_rebuild`).
        cur.execute("ALTER TABLE dispatcher_job DISABLE TRIGGER USER")
        cur.execute("ALTER TABLE dispatcher_jobattempt DISABLE TRIGGER USER")
        constraint_like = {"job_unique_name_in_workflow"}
        for name, _ in index_defs:
            if name in constraint_like:
                cur.execute(f'ALTER TABLE dispatcher_job DROP CONSTRAINT IF EXISTS "{name}"')
            cur.execute(f'DROP INDEX IF EXISTS "{name}"')

    now = datetime.now(UTC)
    span = args.days * 86400
    n_jobs = args.jobs
    special = {
        big_task.jeditaskid: BIG_TASK_JOBS,
        calib_task.jeditaskid: 20_000,
        coadd_task.jeditaskid: 1_000,
    }
    rest = n_jobs - sum(special.values())
    other_tasks = task_ids[3:]
    failures_rows: list[str] = []
    edge_rows: list[str] = []
    big_ids: dict[int, list[int]] = {k: [] for k in special}
    wf_of_task = {t.jeditaskid: t.workflow_id for t in tasks}
    label_of_task = {t.jeditaskid: t.label for t in tasks}
    user_of_task = {t.jeditaskid: t.username for t in tasks}

    def job_lines():  # type: ignore[no-untyped-def]
        pandaid = 0
        plan = list(special.items())
        per_other = max(rest // len(other_tasks), 1)
        plan += [(tid, per_other) for tid in other_tasks]
        for tid, n in plan:
            wf = wf_of_task[tid]
            label = label_of_task[tid]
            user = user_of_task[tid]
            for _ in range(n):
                pandaid += 1
                if pandaid > n_jobs:
                    return
                if tid in special:
                    big_ids[tid].append(pandaid)
                # Jobs arrive in pandaid order (1M/day), as in production: the heap is ordered by
                # time, give or take an hour of runtime.
                age = max(span * (1 - pandaid / n_jobs) + rng.uniform(-3600, 3600), 0)
                changed = now - timedelta(seconds=age)
                q = queues[(pandaid * 7 + tid) % N_QUEUES]
                r = rng.random()
                if age < 6 * 3600 and r < 0.15:
                    status = rng.choice(
                        (
                            "running",
                            "running",
                            "running",
                            "activated",
                            "defined",
                            "sent",
                            "starting",
                            "holding",
                        )
                    )
                elif r < 0.10:
                    status = "failed"
                elif r < 0.11:
                    status = rng.choice(("pruned", "cancelled", "closed"))
                else:
                    status = "finished"
                row = dict(defaults)
                start = changed - timedelta(seconds=rng.randint(300, 20_000))
                row.update(
                    pandaid=str(pandaid),
                    jeditaskid=str(tid),
                    workflow_id=str(wf),
                    name=f"{label}_{pandaid}",
                    label=label,
                    jobstatus=status,
                    produsername=user,
                    attemptnr=str(1 + (rng.random() < 0.08) + (rng.random() < 0.02)),
                    currentpriority=str(rng.choice((500, 600, 900))),
                    pending_parents="0",
                    resource_type=rng.choice(("SCORE", "MCORE", "SCORE_HIMEM")),
                    modificationhost=f"wn{rng.randint(1, 400)}.{q.site.name.lower()}.example.org",
                    command="run.sh",
                    request_cores=str(rng.choice((1, 1, 1, 4, 8))),
                    creationtime=(changed - timedelta(seconds=rng.randint(60, 40_000))).isoformat(),
                )
                extra = {
                    "computingsite": q.name if status != "defined" else "\\N",
                    "statechangetime": changed.isoformat(),
                    "starttime": start.isoformat() if status in ("finished", "failed", "running") else "\\N",
                    "endtime": changed.isoformat() if status in ("finished", "failed") else "\\N",
                    "cpu_time_s": str(rng.randint(100, 18_000))
                    if status in ("finished", "failed")
                    else "\\N",
                    "max_rss_kb": str(rng.randint(200_000, 6_000_000))
                    if status in ("finished", "failed")
                    else "\\N",
                }
                if status == "failed":
                    fam, code, tmpl = rng.choice(FAILURES)
                    diag = tmpl.format(
                        n=rng.randint(1, 99999),
                        site=q.site.name.lower(),
                        s=rng.randint(60, 90000),
                        k=rng.randint(10**6, 10**7),
                        h=f"{rng.getrandbits(40):010x}",
                    )
                    code_col = {
                        "pilot": "piloterrorcode",
                        "exe": "exeerrorcode",
                        "ddm": "ddmerrorcode",
                        "sup": "superrorcode",
                    }[fam]
                    row[code_col] = str(code)
                    row[code_col.replace("code", "diag")] = diag
                    failures_rows.append(
                        "\t".join(
                            [
                                str(pandaid),
                                str(tid),
                                row["attemptnr"],
                                "failed",
                                q.name,
                                row["modificationhost"],
                                row.get("piloterrorcode", "0"),
                                row.get("piloterrordiag", ""),
                                row.get("exeerrorcode", "0"),
                                row.get("exeerrordiag", ""),
                                row.get("ddmerrorcode", "0"),
                                row.get("ddmerrordiag", ""),
                                row.get("superrorcode", "0"),
                                row.get("superrordiag", ""),
                                changed.isoformat(),
                            ]
                        )
                        + "\n"
                    )
                yield "\t".join(row[c] for c in columns) + "\t" + "\t".join(extra.values()) + "\n"

    extra_cols = ["computingsite", "statechangetime", "starttime", "endtime", "cpu_time_s", "max_rss_kb"]
    with connection.cursor() as cur:
        _copy(cur.cursor, "dispatcher_job", columns + extra_cols, job_lines())
        t_jobs = time.monotonic() - t0
        attempt_cols = [
            "job_id",
            "jeditaskid",
            "attemptnr",
            "jobstatus",
            "computingsite",
            "node",
            "piloterrorcode",
            "piloterrordiag",
            "exeerrorcode",
            "exeerrordiag",
            "ddmerrorcode",
            "ddmerrordiag",
            "superrorcode",
            "superrordiag",
            "endtime",
        ]
        defaults_attempt = {
            "pilot_id": "",
            "request_memory_mb": "0",
            "request_cores": "1",
            "transexitcode": "0",
            "jobdispatchererrorcode": "0",
            "jobdispatchererrordiag": "",
            "taskbuffererrorcode": "0",
            "taskbuffererrordiag": "",
            "retry_action": "",
            "retry_reason": "",
            "lease": "",
        }
        suffix = "\t" + "\t".join(defaults_attempt.values()) + "\n"
        _copy(
            cur.cursor,
            "dispatcher_jobattempt",
            attempt_cols + list(defaults_attempt),
            (line[:-1] + suffix for line in failures_rows),
        )
        # Workflow 0's DAG: each calib job after 4 isr jobs, each coadd job after 20 calib jobs. The
        # job edges and the task graph stored as a submission stores it (`Workflow.task_edges`)
        # both come from this one list.
        fan_in = [(big_task, calib_task, 4), (calib_task, coadd_task, 20)]
        for parent_task, child_task, n in fan_in:
            parents = big_ids[parent_task.jeditaskid]
            for i, child in enumerate(big_ids[child_task.jeditaskid]):
                edge_rows.extend(f"{parent}\t{child}\n" for parent in parents[i * n : i * n + n])
        _copy(cur.cursor, "dispatcher_jobdependency", ["parent_id", "child_id"], edge_rows)
        Workflow.objects.update(task_edges=[])
        Workflow.objects.filter(pk=big_task.workflow_id).update(
            task_edges=[[p.jeditaskid, c.jeditaskid] for p, c, _ in fan_in]
        )
        cur.execute("SELECT setval(pg_get_serial_sequence('dispatcher_job', 'pandaid'), %s)", [n_jobs])
        for _name, ddl in index_defs:
            cur.execute(ddl)
        if any(n == "job_unique_name_in_workflow" for n, _ in index_defs):
            cur.execute(
                "ALTER TABLE dispatcher_job ADD CONSTRAINT job_unique_name_in_workflow"
                " UNIQUE USING INDEX job_unique_name_in_workflow"
            )
        for name, definition in fk_defs:
            cur.execute(f'ALTER TABLE dispatcher_job ADD CONSTRAINT "{name}" {definition}')
        cur.execute(
            """INSERT INTO dispatcher_taskcount (jeditaskid, jobstatus, count)
               SELECT jeditaskid, jobstatus, COUNT(*) FROM dispatcher_job GROUP BY 1, 2"""
        )
        cur.execute("ALTER TABLE dispatcher_job ENABLE TRIGGER USER")
        cur.execute("ALTER TABLE dispatcher_jobattempt ENABLE TRIGGER USER")
        queue_counts_rebuild()  # the per-queue counters' triggers were off too
        t_rollups = time.monotonic()
        rollups_rebuild()
        t_rollups = time.monotonic() - t_rollups
        cur.execute("VACUUM ANALYZE")  # statistics, and the visibility map for index-only scans
    return {
        "seeded": True,
        "jobs": n_jobs,
        "failed_attempts": len(failures_rows),
        "edges": len(edge_rows),
        "copy_jobs_s": round(t_jobs, 1),
        "rollups_backfill_s": round(t_rollups, 1),
        "seed_total_s": round(time.monotonic() - t0, 1),
        "big_task": big_task.jeditaskid,
        "workflow": big_task.workflow_id,
    }


def page_list() -> list[tuple[str, int]]:
    """(URL, target p95 in ms): 12-hour pages 300 ms, 7-day pages 1 s with one filter, 3 s with two
    (those are scanned: no summary answers two filters)."""
    from dispatcher.models import Task

    big = Task.objects.order_by("jeditaskid").first()
    assert big is not None
    return [
        ("/jobs/?hours=12", 300),
        ("/errors/?hours=12", 300),
        ("/dash/", 300),
        (f"/task/{big.jeditaskid}/", 300),
        (f"/workflow/{big.workflow_id}/", 300),
        (f"/workflow/{big.workflow_id}/?label=coadd", 300),
        ("/jobs/?days=7", 1000),
        ("/errors/?days=7", 1000),
        ("/dash/?days=7", 1000),
        ("/jobs/?hours=12&computingsite=Q_007&jobstatus=failed", 300),
        # One filter of the filter summary (decision 0013), 12 hours and 7 days.
        ("/jobs/?hours=12&computingsite=!Q_007", 300),
        ("/jobs/?hours=12&region=US", 300),
        ("/jobs/?hours=12&produsername=user03", 300),
        ("/jobs/?hours=12&label=coadd", 300),
        ("/jobs/?days=7&computingsite=!Q_007", 1000),
        ("/jobs/?days=7&computingsite=Q_00*", 1000),
        ("/jobs/?days=7&region=US", 1000),
        (f"/jobs/?days=7&jeditaskid={big.jeditaskid}", 1000),
        ("/jobs/?days=7&jeditaskid=1000", 1000),
        ("/jobs/?days=7&produsername=user0*", 1000),
        ("/jobs/?days=7&label=calib&jobstatus=failed", 1000),
        # Two filters: scanned through an index, bounded by the statement timeout.
        ("/jobs/?days=7&region=US&label=coadd", 3000),
        ("/jobs/?days=7&computingsite=Q_007&produsername=user03", 3000),
        # The REST list's wildcards.
        ("/api/v1/jobs/?produsername=nobody*", 1000),
        ("/api/v1/jobs/?computingsite=Q_00*", 1000),
        ("/", 300),
        ("/tasks/", 300),
        ("/workflows/", 300),
        ("/sites/", 300),
        ("/site/SITE_03/", 300),
        ("/site/SITE_03/?days=7", 1000),
        ("/users/", 300),
    ]


def _api_client():  # type: ignore[no-untyped-def]
    """A test client with an operator's API token (the REST list needs one)."""
    from django.test import Client

    from core.services import token_create

    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(username='bench', role='operator')}")


def _reader(args: tuple[list[str], float, int]) -> dict[str, object]:
    """One concurrent reader (its own process and database connection): cycles the pages from
    `offset` until `duration` has passed; returns its times and errors."""
    urls, duration, offset = args
    from django.db import connections

    connections.close_all()
    client = _api_client()
    times: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + duration
    i = offset
    while time.monotonic() < end:
        url = urls[i % len(urls)]
        i += 1
        t = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        if response.status_code != 200:
            errors.append(f"{url}: {response.status_code}")
    return {"times": times, "errors": errors}


def concurrent(args: argparse.Namespace) -> dict[str, object]:
    """`--readers` processes, each with the in-process test client (server time, no network) and
    its own PostgreSQL connection, cycling the page mix for `--duration` seconds."""
    import multiprocessing

    from _common import machine_busy, percentile
    from django.db import connections

    urls = [u for u, _ in page_list() if not args.only or args.only in u]
    connections.close_all()  # the readers are forked: none may share the parent's connection
    load_before = os.getloadavg()
    busy0, total0 = machine_busy()
    with multiprocessing.get_context("fork").Pool(args.readers) as pool:
        out = pool.map(_reader, [(urls, args.duration, k * 3) for k in range(args.readers)])
    busy1, total1 = machine_busy()
    times = sorted(t for o in out for t in o["times"])  # type: ignore[attr-defined]
    errors = [e for o in out for e in o["errors"]]  # type: ignore[attr-defined]
    return {
        "mode": "processes, in-process Django test client each (server time, no network)",
        "readers": args.readers,
        "duration_s": args.duration,
        "pages": len(urls),
        "requests": len(times),
        "p50_ms": round(percentile(times, 0.5), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "max_ms": round(times[-1], 1) if times else None,
        "errors": len(errors),
        "error_samples": errors[:5],
        "target_p95_ms": 1000,
        "meets_target": bool(times) and percentile(times, 0.95) <= 1000 and not errors,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine_cpu_busy_share": round((busy1 - busy0) / max(total1 - total0, 1), 2),
    }


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    pages = page_list()
    client = _api_client()
    results = []
    for url, target in pages:
        if args.only and args.only not in url:
            continue
        times = []
        statuses: dict[int, int] = {}
        n_queries = 0
        for i in range(args.requests + 1):
            reset_queries()
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - t) * 1000
            if response.status_code != 200:
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if i:  # the first request warms caches (template loading, the DAG edge cache)
                times.append(elapsed)
            n_queries = len(ctx.captured_queries)
        times.sort()
        p95 = times[max(int(round(0.95 * len(times))) - 1, 0)]
        results.append(
            {
                "url": url,
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(p95, 1),
                "max_ms": round(times[-1], 1),
                "target_p95_ms": target,
                "meets_target": p95 <= target and not statuses,
                "non_200": statuses,
                "queries": n_queries,
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def main() -> None:
    args = parse_args()
    setup_django(args)
    seeded = seed(args)
    print(json.dumps({"seed": seeded}), file=sys.stderr, flush=True)
    if args.seed_only:
        return
    load = os.getloadavg()
    pages = measure(args) if args.requests else []
    readers = concurrent(args) if args.readers else None
    print(
        json.dumps(
            {
                "jobs": args.jobs,
                "days": args.days,
                "requests_per_page": args.requests,
                "loadavg_at_start": [round(x, 2) for x in load],
                "seed": seeded,
                "pages": pages,
                "concurrent": readers,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
