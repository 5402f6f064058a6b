"""Dispatcher benchmark: the load of PanDA's server baseline (20,000 activated jobs in one queue)
against ailuro's pilot endpoints, over loopback HTTP to gunicorn and PostgreSQL on this machine.

    python bench/dispatch.py [--clients 16 32] [--jobs 20000] [--get-cap 4000] [--workers 3]

Prints one JSON document (and writes it to var/bench/dispatch.json). Per concurrency C:

1. a dedicated database (default ailuro_bench_dispatch) is migrated and reset to 20,000 activated
   jobs in one queue, equal priority, like the baseline;
2. gunicorn starts (gthread workers), warm-up of 200 calls;
3. phases, C client threads spread over processes, each with its own keep-alive http.client
   connection: get (acquire_jobs n_jobs=1, capped at 4,000 calls, a thread stops after 2
   consecutive no-job replies), heartbeat (one update_job running per dispatched job: sent ->
   running, a state change), plain_heartbeat (the same call again per job: running -> running, no
   state change, the call a pilot repeats every few minutes), finish (one update_job finished per
   dispatched job); then the bulk forms: acquire n_jobs=100, and update_jobs_bulk of 100 running,
   then of 100 finished;
4. per phase: rate, latency percentiles, CPU seconds of the server (gunicorn processes), of
   PostgreSQL (the backends connected to the bench database) and of the client, CPU ms per
   operation, whole-machine busy fraction; afterwards the database checks of the baseline.

Needs DATABASE_URL-style access to a PostgreSQL where the role may create databases
(default postgres://ailuro:ailuro@127.0.0.1:5432/<db>).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    cpu_seconds,
    database_claim,
    free_port,
    machine_busy,
    machine_facts,
    percentile,
    process_tree,
    report_write,
)
from _pilots import Conn, server_start, server_stop, update_body

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "BENCH_QUEUE"
TARGETS = {
    "get": {"rate": 560, "cpu_ms": 3.0},
    "heartbeat": {"rate": 1100, "cpu_ms": 1.7},
    # The project's goal for a per-call update (no PanDA baseline for a heartbeat without a change).
    "plain_heartbeat": {"rate": 2500},
    "finish": {"rate": 550, "cpu_ms": 3.4},
    "bulk_get": {"rate": 10000},
    "bulk_heartbeat": {"rate": 10000},
    "bulk_finish": {"rate": 10000},
}


# --- setup (Django, in this process only) --------------------------------------------------------


def _django(db_url: str) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("AILURO_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _seed(n_jobs: int) -> str:
    """Reset the bench database to `n_jobs` activated jobs in one queue; returns a pilot token."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from core.services import token_create
    from dispatcher.models import Job, Queue, Site, Task, Workflow
    from dispatcher.services import task_count_deltas_add

    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE dispatcher_job, dispatcher_jobstatuslog, dispatcher_jobattempt,"
            " dispatcher_taskcountdelta, dispatcher_taskcount, dispatcher_queuecountdelta,"
            " dispatcher_queuecount, dispatcher_jobdependency, dispatcher_file, dispatcher_payloadlog CASCADE"
        )
    site, _ = Site.objects.get_or_create(name="BENCH_SITE")
    Queue.objects.update_or_create(
        name=QUEUE,
        defaults={
            "site": site,
            "max_rss_mb": 4000,
            "max_disk_mb": 100000,
            "max_walltime_s": 86400,
            "max_cores": 1,
        },
    )
    user, _ = get_user_model().objects.get_or_create(username="bench")
    workflow = Workflow.objects.create(name="bench", owner=user)
    task = Task.objects.create(workflow=workflow, label="bench", name="bench/bench", username="bench")
    Job.objects.bulk_create(
        [
            Job(
                task=task,
                workflow=workflow,
                name=f"bench_{i}",
                label="bench",
                produsername="bench",
                command="true",
                jobstatus="activated",
                queue_id=QUEUE,
                currentpriority=1000,
                request_memory_mb=1000,
                request_disk_mb=1000,
                request_walltime_s=3600,
            )
            for i in range(n_jobs)
        ],
        batch_size=5000,
    )
    task_count_deltas_add({(task.pk, "activated"): n_jobs})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE dispatcher_job")
    return token_create(username="bench-pilot", role="pilot", queues=[QUEUE])


def _db_checks(dispatched: set[int]) -> dict[str, Any]:
    from django.db.models import Count

    from dispatcher.models import Job, JobAttempt, JobStatusLog

    sent_rows = (
        JobStatusLog.objects.filter(jobstatus="sent")
        .values("job_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    states = dict(Job.objects.order_by().values_list("jobstatus").annotate(n=Count("pandaid")))
    return {
        "jobs_sent_more_than_once": sent_rows,
        "job_states": states,
        "attempt_rows": JobAttempt.objects.count(),
        "dispatched_by_client": len(dispatched),
    }


# --- CPU accounting --------------------------------------------------------------------------------


class CpuMeter:
    def __init__(self, server_pid: int, db_name: str) -> None:
        self.server_pid = server_pid
        self.db_name = db_name

    def _pg_pids(self) -> list[int]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.db_name],
            )
            return [row[0] for row in cursor.fetchall()]

    def _commits(self) -> int:
        """Transactions committed in the bench database (PostgreSQL flushes these counters within
        a second or so: a phase's figure is close, not exact)."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [self.db_name])
            return int(cursor.fetchone()[0])

    def snapshot(self) -> dict[str, Any]:
        pg = {pid: cpu_seconds(pid) for pid in self._pg_pids()}
        server = {pid: cpu_seconds(pid) for pid in process_tree(self.server_pid)}
        return {
            "server": sum(server.values()),
            "server_procs": server,
            "pg": pg,
            "machine": machine_busy(),
            "commits": self._commits(),
        }

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        pg = sum(b["pg"].get(pid, 0.0) - a["pg"].get(pid, 0.0) for pid in b["pg"])
        busy = (b["machine"][0] - a["machine"][0]) / max(b["machine"][1] - a["machine"][1], 1)
        # Per gunicorn process, busiest first: a worker holding most connections is GIL-bound.
        procs = sorted(b["server_procs"][pid] - a["server_procs"].get(pid, 0.0) for pid in b["server_procs"])
        commits = b["commits"] - a["commits"]
        return {
            "server": b["server"] - a["server"],
            "pg": pg,
            "busy": busy,
            "server_procs": procs,
            "commits": commits,
        }


# --- clients (separate processes, one http.client connection per thread) ---------------------------


# Shared call counters of the get phases, created before the pool forks (inherited, not pickled).
_COUNTERS: list[Any] = []


def _client_process(args: tuple[str, int, str, int, list[list[Any]], int, int, int]) -> dict[str, Any]:
    phase, port, token, n_threads, work, counter_index, cap, batch = args
    counter = _COUNTERS[counter_index] if counter_index >= 0 else None
    cpu_start = sum(os.times()[0:2])
    results: list[list[Any]] = [[] for _ in range(n_threads)]

    def get_loop(slot: int) -> None:
        conn = Conn(port, token)
        misses = 0
        while misses < 2:
            assert counter is not None
            with counter.get_lock():
                if counter.value >= cap:
                    return
                counter.value += 1
            payload = {
                "site_name": QUEUE,
                "prod_source_label": "managed",
                "node": f"bench-wn{slot:03d}",
                "computing_element": "bench-ce",
                "memory": 4000,
                "disk_space": 100000,
                "n_jobs": batch,
                "timeout": 60,
            }
            t0 = time.perf_counter()
            status, body = conn.post("/api/v1/pilot/acquire_jobs", payload)
            dt = time.perf_counter() - t0
            jobs = (body.get("data") or {}).get("jobs") or [] if status == 200 and body.get("success") else []
            misses = 0 if jobs else misses + 1
            results[slot].append([dt, [[j["PandaID"], j["attemptNr"], j["lease"]] for j in jobs]])

    def update_loop(slot: int) -> None:
        conn = Conn(port, token)
        state = "running" if phase.endswith("heartbeat") else "finished"
        for item in work[slot]:
            if phase.startswith("bulk"):
                payload: Any = {
                    "job_list": [update_body(j, state, QUEUE) for j in item],
                    "harvester_id": "bench",
                }
                path = "/api/v1/pilot/update_jobs_bulk"
            else:
                payload, path = update_body(item, state, QUEUE), "/api/v1/pilot/update_job"
            t0 = time.perf_counter()
            status, body = conn.post(path, payload)
            dt = time.perf_counter() - t0
            if phase.startswith("bulk"):
                ok = sum(
                    1 for r in (body.get("data") or []) if r.get("success") and r["data"]["StatusCode"] == 0
                )
            else:
                ok = int(status == 200 and body.get("success") and body["data"]["StatusCode"] == 0)
            results[slot].append([dt, ok])

    target = get_loop if phase.endswith("get") else update_loop
    threads = [threading.Thread(target=target, args=(slot,)) for slot in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"results": results, "cpu": sum(os.times()[0:2]) - cpu_start}


def _run_phase(
    pool: Any,
    phase: str,
    clients: int,
    procs: int,
    port: int,
    token: str,
    items: list[Any],
    meter: CpuMeter,
    **kw: Any,
) -> tuple[dict[str, Any], list[Any]]:
    per_proc = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    counter = kw.get("counter", -1)
    work_slots: list[list[list[Any]]] = []
    slot = 0
    for n in per_proc:
        slots: list[list[Any]] = [[] for _ in range(n)]
        work_slots.append(slots)
    flat = [s for slots in work_slots for s in slots]
    for i, item in enumerate(items):
        flat[i % clients].append(item)
    before = meter.snapshot()
    t0 = time.perf_counter()
    outs = pool.map(
        _client_process,
        [
            (phase, port, token, n, work_slots[i], counter, kw.get("cap", 0), kw.get("batch", 1))
            for i, n in enumerate(per_proc)
        ],
    )
    wall = time.perf_counter() - t0
    after = meter.snapshot()
    cpu = CpuMeter.delta(before, after)
    client_cpu = sum(o["cpu"] for o in outs)
    latencies: list[float] = []
    ok_ops = calls = no_job = 0
    dispatched: list[Any] = []
    for out in outs:
        for rows in out["results"]:
            for dt, payload in rows:
                calls += 1
                latencies.append(dt * 1000)
                if phase.endswith("get"):
                    if payload:
                        ok_ops += len(payload)
                        dispatched.extend(payload)
                    else:
                        no_job += 1
                else:
                    ok_ops += payload
    del slot
    stats = {
        "calls": calls,
        "ok_jobs": ok_ops,
        "no_job_replies": no_job if phase.endswith("get") else None,
        "wall_s": round(wall, 3),
        "jobs_per_s": round(ok_ops / wall, 1) if wall else 0,
        "calls_per_s": round(calls / wall, 1) if wall else 0,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.5), 2),
            "p90": round(percentile(latencies, 0.9), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies, default=0), 2),
            "mean": round(sum(latencies) / len(latencies), 2) if latencies else 0,
        },
        "cpu_s": {
            "server": round(cpu["server"], 2),
            "server_by_process": [round(c, 2) for c in reversed(cpu["server_procs"])],
            "postgres": round(cpu["pg"], 2),
            "client": round(client_cpu, 2),
        },
        "cpu_ms_per_job": {
            "server": round(1000 * cpu["server"] / max(ok_ops, 1), 3),
            "postgres": round(1000 * cpu["pg"] / max(ok_ops, 1), 3),
            "server_plus_postgres": round(1000 * (cpu["server"] + cpu["pg"]) / max(ok_ops, 1), 3),
            # The client runs on the same cores: what it takes is not left for the server.
            "client": round(1000 * client_cpu / max(ok_ops, 1), 3),
        },
        "machine_busy": round(cpu["busy"], 3),
        # Fewer commits than calls: heartbeats of concurrent calls shared a statement.
        "commits_per_call": round(cpu["commits"] / max(calls, 1), 3),
    }
    target = TARGETS.get(phase)
    if target:
        stats["target"] = target
        stats["meets_rate"] = stats["jobs_per_s"] >= target["rate"]
        if "cpu_ms" in target:
            stats["meets_cpu"] = stats["cpu_ms_per_job"]["server_plus_postgres"] <= target["cpu_ms"]
    return stats, dispatched


def _warm_up(port: int, clients: int) -> None:
    def hit(n: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            c.request("GET", "/trf/user/runpayload.sh")
            c.getresponse().read()

    threads = [threading.Thread(target=hit, args=(200 // max(clients, 8),)) for _ in range(max(clients, 8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(args: argparse.Namespace) -> dict[str, Any]:
    admin_url = f"{args.pg}/postgres"
    db_url = f"{args.pg}/{args.db}"
    database_claim(admin_url, args.db)  # refuses a database a benchmark did not create
    _django(db_url)
    report: dict[str, Any] = {
        "benchmark": "dispatch",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": machine_facts(),
        "server": (
            f"granian wsgi, {args.workers} workers x {args.threads} blocking threads"
            if args.server == "granian"
            else f"gunicorn gthread, {args.workers} workers x {args.threads} threads"
        )
        + f" {args.server_args}".rstrip(),
        "runs": [],
    }
    ctx = mp.get_context("fork")
    for clients in args.clients:
        token = _seed(args.jobs)
        port = free_port()
        server = server_start(
            db_url, args.workers, args.threads, port, args.server_args.split(), kind=args.server
        )
        procs = min(clients, args.client_procs)
        try:
            _warm_up(port, clients)
            meter = CpuMeter(server.pid, args.db)
            from django.db import connections

            connections.close_all()  # the pool forks: children must not share the parent's socket
            _COUNTERS[:] = [ctx.Value("i", 0), ctx.Value("i", 0)]
            with ctx.Pool(procs) as pool:
                run_report: dict[str, Any] = {"clients": clients, "client_processes": procs, "phases": {}}
                get, dispatched = _run_phase(
                    pool, "get", clients, procs, port, token, [], meter, counter=0, cap=args.get_cap, batch=1
                )
                ids = [d[0] for d in dispatched]
                get["duplicates"] = sum(1 for _, n in Counter(ids).items() if n > 1)
                run_report["phases"]["get"] = get
                run_report["phases"]["heartbeat"], _ = _run_phase(
                    pool, "heartbeat", clients, procs, port, token, dispatched, meter
                )
                run_report["phases"]["plain_heartbeat"], _ = _run_phase(
                    pool, "plain_heartbeat", clients, procs, port, token, dispatched, meter
                )
                run_report["phases"]["finish"], _ = _run_phase(
                    pool, "finish", clients, procs, port, token, dispatched, meter
                )
                # Bulk forms: n_jobs=100 per call, then update_jobs_bulk of 100.
                bulk_get, bulk = _run_phase(
                    pool,
                    "bulk_get",
                    clients,
                    procs,
                    port,
                    token,
                    [],
                    meter,
                    counter=1,
                    cap=args.bulk_calls,
                    batch=100,
                )
                bulk_ids = [d[0] for d in bulk]
                bulk_get["duplicates"] = sum(1 for _, n in Counter(ids + bulk_ids).items() if n > 1)
                run_report["phases"]["bulk_get"] = bulk_get
                chunks = [bulk[i : i + 100] for i in range(0, len(bulk), 100)]
                run_report["phases"]["bulk_heartbeat"], _ = _run_phase(
                    pool, "bulk_heartbeat", clients, procs, port, token, chunks, meter
                )
                run_report["phases"]["bulk_finish"], _ = _run_phase(
                    pool, "bulk_finish", clients, procs, port, token, chunks, meter
                )
                run_report["database_checks"] = _db_checks(set(ids + bulk_ids))
            report["runs"].append(run_report)
        finally:
            server_stop(server)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--get-cap", type=int, default=4000)
    parser.add_argument(
        "--bulk-calls", type=int, default=100, help="acquire calls of n_jobs=100 in the bulk phase"
    )
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--server",
        choices=("gunicorn", "granian"),
        default="gunicorn",
        help="the WSGI server (deployed: granian for the pilot lane, docs/decisions/0022-pilot-lane-on-granian.md)",
    )
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument(
        "--server-args",
        default="",
        help="more options of the server, e.g. '--server-args=--http-parser=fast' (one string)",
    )
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://ailuro:ailuro@127.0.0.1:5432"))
    parser.add_argument("--db", default="ailuro_bench_dispatch")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "dispatch.json"))
    args = parser.parse_args()
    report = run(args)
    report_write(report, args.out)


if __name__ == "__main__":
    main()
