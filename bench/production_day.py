"""A compressed production day: PostgreSQL already holding N jobs (default 10,000,000), the web
server (gunicorn, or granian with `--server granian`; the layout deployed, pilot calls on the pilot
lane and the rest on gunicorn, with `--server granian --pilot-lane --monitor-workers N
--monitor-server gunicorn`), a Celery worker and beat running every
loop, lean pilot clients driving the real endpoints, DAG workflows submitted throughout, 8 monitor
readers, at increasing offered load until a limit.

    python bench/production_day.py                                # 10M jobs, phases 1 1.5 2 3, 30 min each
    python bench/production_day.py --ramp-duration 300            # 30 min at 1×, then 5 min per step
    python bench/production_day.py --jobs-existing 200000 --duration 120 --phases 1 2

1. The scratch database (`--db`, default ailuro_bench_prodday; only one a benchmark created) is
   seeded once by bench/monitor.py's COPY seeder (10 days of jobs over 100 queues) and reused.
2. The bench starts the web server, a Celery worker and a Celery beat (every loop of config/loops.py)
   on it, one pilot queue for its own workflows, retry back-offs compressed to `--backoff` s.
3. Per phase (offered load × multiplier, `--duration` s): pilots (processes × threads, one
   keep-alive connection each, bench/_pilots.Conn) dispatch at `--rate` × m per s; each job runs
   `--runtime` s with heartbeats at `--heartbeats` × m per s in all, then a final update, failed
   for `--fail` of them (preempted: retried; OOM: retried with more memory, re-brokered; payload
   error: final, its descendants pruned); 3-level DAG workflows are submitted at the matching
   rate (so children are released); `--readers` threads cycle the shifter's pages, each looking
   at a page for `--reader-think` s before the next; a probe
   measures the rollup lag (a job's end → counted on `/jobs/?json`); loop lags are sampled from
   LoopStatus and `/readyz`. With `--monitor-workers N` the readers and the probe read a second
   web server of their own (the monitor lane), the pilots and the submitter call the first.
   Before the first phase, a warm-up at its load (`--warmup` s, unmeasured) brings the running
   jobs, and so the heartbeats, to their steady number: rate × runtime jobs, each heartbeating
   every runtime × rate / heartbeats s. Without it a phase's first runtime is a ramp, and a short
   phase reports fewer heartbeats than offered although the server kept up.
4. Then a drain: no more submissions, every remaining job dispatched and ended, and the exact
   reconciliation (SQL against the clients' own records): every submitted job in one final state,
   attempt rows = dispatches per job, no (job, attempt) dispatched or ended twice, no lost report.

Prints one JSON document (also written to var/bench/production_day.json). A phase that misses a
target (pilot-call p99 ≤ 250 ms, monitor p95 ≤ 1 s, rollup lag ≤ 30 s, loops within their
period, offered rate achieved, clients on time) is the limit the report names (`limit`: the
targets missed and the busiest process kind). The load is judged once the clients hand in their
records, so the phases after a limit still run (they show the trend) unless a loop stalled.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    core_loop_ms,
    cpu_seconds,
    free_port,
    machine_busy,
    machine_facts,
    parent_pid,
    percentile,
    process_tree,
    report_write,
)
from _pilots import MODE_DRAIN, MODE_RUN, MODE_STOP, Conn, fleet_process_main, server_start, server_stop
from _prodday_probes import (
    DbMeter,
    LoopSampler,
    RollupProbe,
    StatementSampler,
    celery_start,
    reader_pages,
    reader_process_main,
)
from _prodday_reconcile import reconcile

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "PRODDAY_Q"
TARGETS = {
    "dispatch_per_s": 35,
    "final_per_s": 35,
    "heartbeat_per_s": 800,
    "pilot_p99_ms": 250,
    "monitor_p95_ms": 1000,
    "rollup_lag_s": 30,
}
QUIET_TIMEOUT_S = 30 * 86400
PILOT_KINDS = ("dispatch", "dispatch_empty", "heartbeat", "final", "submit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs-existing", type=int, default=10_000_000, help="jobs seeded before the day")
    p.add_argument("--duration", type=float, default=1800, help="seconds per phase")
    p.add_argument(
        "--ramp-duration", type=float, default=None,
        help="seconds per phase after the first (default: --duration): a long first phase, then a quick ramp",
    )  # fmt: skip
    p.add_argument("--phases", type=float, nargs="+", default=[1, 1.5, 2, 3], help="load multipliers")
    p.add_argument("--rate", type=float, default=35, help="dispatches/s offered at multiplier 1")
    p.add_argument("--heartbeats", type=float, default=800, help="heartbeats/s at multiplier 1")
    p.add_argument("--runtime", type=float, default=60, help="seconds a job runs (±30 %%)")
    p.add_argument(
        "--warmup", type=float, default=None,
        help="unmeasured seconds at the first phase's load before it (default: 1.5 × --runtime)",
    )  # fmt: skip
    p.add_argument("--fail", type=float, default=0.05, help="fraction of final updates that fail")
    p.add_argument("--backoff", type=int, default=2, help="retry back-off in the bench database, s")
    p.add_argument(
        "--workflow-width", type=int, default=8,
        help="jobs of a workflow's first level (even; then half as many, then 1, in 3 tasks)",
    )  # fmt: skip
    p.add_argument("--readers", type=int, default=8)
    p.add_argument(
        "--reader-think", type=float, default=5.0,
        help="seconds a reader looks at a page before the next (±50 %%; 0: back to back)",
    )  # fmt: skip
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument("--client-threads", type=int, default=16)
    p.add_argument(
        "--server",
        choices=("gunicorn", "granian"),
        default="gunicorn",
        help="the WSGI server of the pilot calls and the REST submission (deployed: granian serves "
        "the pilot lane, gunicorn everything else; docs/decisions/0022-pilot-lane-on-granian.md)",
    )
    p.add_argument("--workers", type=int, default=3, help="web server worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per web server worker")
    p.add_argument(
        "--monitor-workers", type=int, default=0,
        help="worker processes of a second web server for the pages (the monitor lane: readers and "
        "the rollup probe read it, pilots call the first); 0: one server for everything",
    )  # fmt: skip
    p.add_argument("--monitor-threads", type=int, default=4, help="threads per monitor lane worker")
    p.add_argument(
        "--monitor-server", choices=("gunicorn", "granian"), default=None,
        help="the WSGI server of the monitor lane (default: --server's)",
    )  # fmt: skip
    p.add_argument(
        "--pilot-lane", action="store_true",
        help="the layout deployed: the first server runs as the pilot lane (AILURO_WEB_ROLE=pilot) "
        "and serves the pilot calls only; the submitter and the loops' page go to the monitor lane "
        "(needs --monitor-workers)",
    )  # fmt: skip
    p.add_argument("--celery-concurrency", type=int, default=2)
    p.add_argument("--drain", type=float, default=300, help="most seconds the final drain may take")
    p.add_argument("--db", default="ailuro_bench_prodday")
    p.add_argument("--reseed", action="store_true", help="drop and seed the scratch database afresh")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://ailuro:ailuro@127.0.0.1:5432"))
    p.add_argument("--out", default=str(ROOT / "var" / "bench" / "production_day.json"))
    args = p.parse_args(argv)
    if args.pilot_lane and not args.monitor_workers:
        p.error("--pilot-lane needs --monitor-workers: the pilot lane serves nothing but the pilot calls")
    if args.workflow_width < 2 or args.workflow_width % 2:
        p.error("--workflow-width must be an even number of at least 2")
    return args


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Seed (once) with bench/monitor.py's COPY seeder, then the bench's queue, tokens, back-offs."""
    import monitor

    margs = argparse.Namespace(
        base_url=f"{args.pg}/{args.db}", db=args.db, reseed=args.reseed, jobs=args.jobs_existing, days=10
    )
    monitor.setup_django(margs)  # claims the scratch database (refuses any other), migrates
    t0 = time.monotonic()
    seeded = monitor.seed(margs)
    seeded["seconds"] = round(time.monotonic() - t0, 1)

    from django.contrib.auth import get_user_model

    from core.services import token_create
    from dispatcher.models import Queue, RetryRule, Site, Task, Workflow
    from dispatcher.services import workflow_cancel
    from dispatcher.states import WORKFLOW_FINAL
    from pandamon.rollups import rollups_fold

    # The seeded world's in-flight jobs (running, starting, holding: ~21k at 10M) stand for pilots
    # the bench does not drive. Left to the watcher they would all time out during the first
    # phase and be retried (a reaping backlog no production day starts with), so their queues'
    # heartbeat timeout and the holding timeout (QUIET_TIMEOUT_S in the processes' environment)
    # outlast the day. The day's own queue keeps the defaults.
    Queue.objects.exclude(name=QUEUE).update(heartbeat_timeout_s=QUIET_TIMEOUT_S)
    site, _ = Site.objects.get_or_create(name="PRODDAY_SITE")
    Queue.objects.update_or_create(
        name=QUEUE,
        defaults={
            "site": site, "max_rss_mb": 16000, "max_disk_mb": 100000, "max_walltime_s": 86400,
            "heartbeat_timeout_s": None,
        },
    )  # fmt: skip
    # A day starts without an earlier run's leftovers on its queue (an interrupted run leaves
    # activated and running jobs the new fleet would otherwise take first).
    leftovers = Workflow.objects.filter(name__startswith="prodday-").exclude(status__in=WORKFLOW_FINAL)
    for workflow_id in leftovers.values_list("pk", flat=True):
        workflow_cancel(workflow_id=workflow_id, actor="production_day")
    # ... and with the summaries current: the cancellations' changes folded before the clock starts.
    while rollups_fold():
        pass
    for rule in RetryRule.objects.all():  # a compressed day: back-offs of seconds, not minutes
        if isinstance(rule.params, dict) and "backoff_s" in rule.params:
            rule.params = {**rule.params, "backoff_s": args.backoff}
            rule.save(update_fields=["params"])
    get_user_model().objects.get_or_create(username="prodday")
    big = Task.objects.order_by("jeditaskid").first()
    return {
        "seed": seeded,
        "pilot_token": token_create(username="prodday-pilot", role="pilot", queues=[QUEUE]),
        "user_token": token_create(username="prodday", role="user"),
        "big_task": big.jeditaskid if big else 0,
        "big_workflow": big.workflow_id if big else 0,
    }


def workflow_spec(name: str, width: int) -> dict[str, Any]:
    """A 3-level DAG of `jobs_per_workflow(width)` jobs in 3 tasks: `width` → `width` / 2 (two
    parents each) → 1, pinned to the bench's queue."""
    jobs: list[dict[str, Any]] = [
        {"name": f"isr_{i}", "label": "isr", "command": "true"} for i in range(width)
    ]
    jobs += [
        {
            "name": f"cal_{i}",
            "label": "cal",
            "command": "true",
            "depends_on": [f"isr_{2 * i}", f"isr_{2 * i + 1}"],
        }
        for i in range(width // 2)
    ]
    jobs.append(
        {
            "name": "sum",
            "label": "sum",
            "command": "true",
            "depends_on": [f"cal_{i}" for i in range(width // 2)],
        }
    )
    return {
        "name": name,
        "defaults": {"resources": {"memory_mb": 2000}, "sites": {"include": [QUEUE]}, "max_attempts": 3},
        "jobs": jobs,
    }


def jobs_per_workflow(width: int) -> int:
    """The jobs of `workflow_spec(…, width)`."""
    return width + width // 2 + 1


class Submitter(threading.Thread):
    """Submits workflows over the REST API at `rate` jobs/s (control[1] × base), until stopped."""

    def __init__(
        self, port: int, token: str, prefix: str, base_rate: float, control: Any, width: int
    ) -> None:
        super().__init__(daemon=True)
        self.conn = Conn(port, token)
        self.prefix, self.base_rate, self.control, self.width = prefix, base_rate, control, width
        self.jobs_per_workflow = jobs_per_workflow(width)
        self.stop = threading.Event()
        self.n = 0
        self.records: list[tuple[int, float, bool]] = []

    def submit(self) -> None:
        self.n += 1
        t0 = time.perf_counter()
        status, _ = self.conn.post(
            "/api/v1/workflows/", workflow_spec(f"{self.prefix}{self.n:06d}", self.width)
        )
        self.records.append((int(self.control[0]), (time.perf_counter() - t0) * 1000, status == 201))

    def run(self) -> None:
        next_t = time.monotonic()
        while not self.stop.is_set():
            rate = self.base_rate * self.control[1] / self.jobs_per_workflow
            if rate <= 0:  # before the first phase
                self.stop.wait(0.2)
                next_t = time.monotonic()
                continue
            next_t = max(next_t + 1 / rate, time.monotonic() - 5)
            delay = next_t - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            self.submit()


class Cpu(threading.Thread):
    """CPU seconds per process kind from /proc/<pid>/stat: each kind a process tree, its members
    that exited meanwhile included (their parents' reaped-children time); PostgreSQL the whole
    cluster's process tree the same way. And, every 5 s, PostgreSQL's CPU split by whose
    statements it ran: the backends connected to the bench database, by application_name, each
    counted from its first reading (or from 0 when it connected since the last); a backend that
    disconnects takes at most its last 5 s with it (web connections live CONN_MAX_AGE, 60 s)."""

    def __init__(self, kinds: dict[str, list[int]], pg_pids: Any) -> None:
        super().__init__(daemon=True)
        self.kinds, self.pg_pids = kinds, pg_pids
        self.postmaster = 0
        self.by_client: dict[str, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    @staticmethod
    def tree(root: int) -> float:
        return sum(cpu_seconds(pid, reaped=True) for pid in process_tree(root))

    def sample_backends(self) -> None:
        backends = self.pg_pids()
        if not self.postmaster and backends:
            self.postmaster = parent_pid(backends[0][0])
        now = {pid: (app or "other", cpu_seconds(pid)) for pid, app in backends}
        with self.lock:
            for pid, (app, value) in now.items():
                before = self.last.get(pid)
                used = value - before[1] if before and before[0] == app else value
                self.by_client[app] = self.by_client.get(app, 0.0) + max(used, 0.0)
            self.last = now

    def run(self) -> None:
        from django.db import connections

        while not self.stop.wait(5):
            self.sample_backends()
        connections.close_all()

    def snapshot(self) -> dict[str, float]:
        out = {kind: sum(self.tree(root) for root in roots) for kind, roots in self.kinds.items()}
        self.sample_backends()
        out["_pgcluster"] = self.tree(self.postmaster) if self.postmaster else 0.0
        with self.lock:
            out.update({f"_pg|{app}": v for app, v in self.by_client.items()})
        out["bench_main"] = sum(os.times()[0:2])
        busy, total = machine_busy()
        out["_busy"], out["_total"] = busy, total
        return out

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float], wall: float) -> dict[str, Any]:
        per = {k: round(b[k] - a[k], 2) for k in b if not k.startswith("_")}
        per["postgres"] = round(b["_pgcluster"] - a["_pgcluster"], 2)
        # The rest (background processes, autovacuum, what backends used in their last seconds
        # before disconnecting) is "background_or_unsampled".
        by_client = {k.split("|")[1]: v - a.get(k, 0.0) for k, v in b.items() if k.startswith("_pg|")}
        by_client["background_or_unsampled"] = max(per["postgres"] - sum(by_client.values()), 0.0)
        cores = {k: round(v / wall, 3) for k, v in per.items()} if wall else {}
        # Whose statements PostgreSQL's CPU went to: the backends by application_name (each process
        # kind connects with its own; "other" is the harness's own connections).
        pg_cores = {k: round(v / wall, 3) for k, v in sorted(by_client.items())} if wall else {}
        busy = (b["_busy"] - a["_busy"]) / max(b["_total"] - a["_total"], 1)
        return {
            "cpu_s": per,
            "cores_used": cores,
            "postgres_cores_by_client": pg_cores,
            "machine_busy": round(busy, 3),
        }


def merge_phase(chunks: list[dict[str, Any]], phase: int) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for chunk in chunks:
        for key, values in chunk.get("latency_ms", {}).items():
            p, kind = key.split("|", 1)
            if int(p) == phase:
                merged.setdefault(kind, []).extend(values)
    return merged


def lat_stats(values: list[float], wall: float) -> dict[str, Any]:
    return {
        "calls": len(values),
        "per_s": round(len(values) / wall, 1) if wall else 0,
        "p50_ms": round(percentile(values, 0.5), 1),
        "p95_ms": round(percentile(values, 0.95), 1),
        "p99_ms": round(percentile(values, 0.99), 1),
        "max_ms": round(max(values, default=0), 1),
    }


def judge(phase: dict[str, Any], offered: dict[str, float]) -> list[str]:
    """The targets a phase missed, each named by the component that missed it."""
    missed = []
    calls = phase["pilot_calls"]
    for kind in ("dispatch", "heartbeat", "final"):
        if calls.get(kind, {}).get("p99_ms", 0) > TARGETS["pilot_p99_ms"]:
            missed.append(f"server: {kind} p99 {calls[kind]['p99_ms']} ms > {TARGETS['pilot_p99_ms']}")
    got = calls.get("dispatch", {}).get("per_s", 0)
    if got < 0.9 * offered["dispatch_per_s"]:
        empty = calls.get("dispatch_empty", {}).get("calls", 0)
        missed.append(
            f"throughput: {got} dispatches/s < 90 % of {offered['dispatch_per_s']} offered"
            f" ({empty} no-job replies)"
        )
    if phase["client_late_p99_ms"] > 1000:
        missed.append(f"clients: calls start {phase['client_late_p99_ms']} ms late (p99)")
    for page, stats in phase["monitor"].items():
        if stats["p95_ms"] > TARGETS["monitor_p95_ms"]:
            missed.append(f"monitor: {page} p95 {stats['p95_ms']} ms > {TARGETS['monitor_p95_ms']}")
    lag = phase["rollup_lag_s"]["max"]
    if lag is None or lag > TARGETS["rollup_lag_s"]:
        missed.append(f"rollup: lag {lag} s > {TARGETS['rollup_lag_s']}")
    for name, loop in phase["loops"].items():
        if loop.get("within_period") is False:
            missed.append(f"loop {name}: lag {loop['max_lag_s']} s over its period {loop['period_s']} s")
    return missed


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    report: dict[str, Any] = {
        "benchmark": "production_day",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": machine_facts(),
        "targets": TARGETS,
        "server": f"{args.server}, {args.workers} workers x {args.threads} threads"
        + (" (the pilot lane)" if args.pilot_lane else "")
        + (
            f"; monitor lane {args.monitor_server or args.server}, {args.monitor_workers} workers"
            f" x {args.monitor_threads} threads"
            if args.monitor_workers
            else ""
        ),
    }
    setup = prepare(args)
    report["existing_jobs"] = setup["seed"]
    from django.db import connection, connections

    db_url = f"{args.pg}/{args.db}"
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    cache = os.environ.get("AILURO_CACHE_URL") or (broker if broker.startswith("redis") else "")
    env_extra = {
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "AILURO_ANONYMOUS_READ": "1",
        "CELERY_BROKER_URL": broker,
        # As deployed (deploy/compose.yaml): one Redis cache shared by every web process, not a
        # small cache per process that forgets the pages' cached reads as it fills.
        "AILURO_CACHE_URL": cache,
        "AILURO_HOLDING_TIMEOUT": str(QUIET_TIMEOUT_S),
    }
    os.environ.update(env_extra)
    port = free_port()
    log_dir = ROOT / "var" / "bench" / "production_day"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = server_start(
        f"{db_url}?application_name=web", args.workers, args.threads, port, [],
        {**env_extra, **({"AILURO_WEB_ROLE": "pilot"} if args.pilot_lane else {})}, kind=args.server,
    )  # fmt: skip
    # The monitor lane: the pages served by processes of their own, whose CPU and PostgreSQL
    # backends are then counted apart from the pilot calls'.
    page_port, monitor = port, None
    if args.monitor_workers:
        page_port = free_port()
        monitor = server_start(
            f"{db_url}?application_name=monitor", args.monitor_workers, args.monitor_threads, page_port,
            [], env_extra, kind=args.monitor_server or args.server,
        )  # fmt: skip
    worker = celery_start(
        ["worker", "-n", f"prodday-{os.getpid()}@%h", "-c", str(args.celery_concurrency),
         "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        log_dir / "worker.log", f"{db_url}?application_name=worker", env_extra,
    )  # fmt: skip
    beat = celery_start(
        ["beat", "-s", str(log_dir / f"beat-schedule-{os.getpid()}"), "--loglevel", "WARNING"],
        log_dir / "beat.log", f"{db_url}?application_name=beat", env_extra,
    )  # fmt: skip
    ctx = mp.get_context("fork")
    control = ctx.Array("d", [-1.0, 0.0, float(MODE_RUN)], lock=False)
    hb_interval = args.runtime * args.rate / max(args.heartbeats, 1e-6)
    warmup_s = 1.5 * args.runtime if args.warmup is None else args.warmup
    report["warmup_s"] = warmup_s
    cfg = {
        "port": port, "token": setup["pilot_token"], "queue": QUEUE, "rate": args.rate,
        "processes": args.client_procs, "threads": args.client_threads, "runtime_s": args.runtime,
        "hb_interval_s": hb_interval, "fail_fraction": args.fail, "seed": 7,
    }  # fmt: skip
    prefix = f"prodday-{uuid.uuid4().hex[:8]}-"
    out_q = ctx.Queue()
    connections.close_all()  # the children fork: they must not share the parent's socket
    fleet = [
        ctx.Process(target=fleet_process_main, args=(cfg, control, i, out_q))
        for i in range(args.client_procs)
    ]
    pages = reader_pages(setup["big_task"], setup["big_workflow"], QUEUE)
    readers = ctx.Process(
        target=reader_process_main, args=(page_port, pages, args.readers, control, out_q, args.reader_think)
    )
    api_port = page_port if args.pilot_lane else port
    submitter = Submitter(api_port, setup["user_token"], prefix, args.rate, control, args.workflow_width)
    cpu = Cpu(
        {"web": [server.pid], "celery_worker": [worker.pid], "celery_beat": [beat.pid], "pilots": [],
         "readers": [], **({"monitor_web": [monitor.pid]} if monitor else {})},
        lambda: DbMeter.backend_pids(args.db),
    )  # fmt: skip
    loops = LoopSampler(api_port)
    probe = RollupProbe(page_port, QUEUE, started)
    statements = StatementSampler(args.db)
    results: dict[int, Any] = {}
    phases: list[dict[str, Any]] = []
    try:
        # Before the first phase: a backlog of one runtime's worth of work, so the DAG's first
        # level is not all there is to dispatch until the first parents end.
        for _ in range(int(args.rate * args.runtime / submitter.jobs_per_workflow) + 1):
            submitter.submit()
        for p in fleet:
            p.start()
        readers.start()
        cpu.kinds["pilots"] = [p.pid for p in fleet if p.pid]
        cpu.kinds["readers"] = [readers.pid] if readers.pid else []
        submitter.start()
        loops.start()
        cpu.start()
        probe.start()
        statements.start()
        # The warm-up: the clients' records of it carry phase -1, which no phase reads.
        control[1] = args.phases[0]
        time.sleep(warmup_s)
        for index, mult in enumerate(args.phases):
            control[1], control[0] = mult, float(index)
            loops.phase = probe.phase = statements.phase = index
            size0, io0, cpu0, t0 = DbMeter.sizes(), DbMeter.io(), cpu.snapshot(), time.monotonic()
            n_sub0 = submitter.n
            time.sleep(args.duration if index == 0 or args.ramp_duration is None else args.ramp_duration)
            wall = time.monotonic() - t0
            size1, io1, cpu1 = DbMeter.sizes(), DbMeter.io(), cpu.snapshot()
            phases.append(
                {
                    "phase": index,
                    "multiplier": mult,
                    "wall_s": round(wall, 1),
                    "offered": {
                        "dispatch_per_s": round(args.rate * mult, 1),
                        "heartbeat_per_s": round(args.heartbeats * mult, 1),
                        "final_per_s": round(args.rate * mult, 1),
                        "workflows_submitted": submitter.n - n_sub0,
                    },
                    "cpu": Cpu.delta(cpu0, cpu1, wall),
                    "db_growth": DbMeter.growth(
                        size0, size1, (submitter.n - n_sub0) * submitter.jobs_per_workflow
                    ),
                    "postgres_io": DbMeter.io_delta(io0, io1, wall),
                    "loadavg": [round(x, 2) for x in os.getloadavg()],
                }
            )
            # Stop raising the load once the phase just run missed a target; judged below, after
            # the clients' per-phase records arrive, so also stop here on a quick server check.
            if index + 1 < len(args.phases) and loops.stalled(index):
                break
        # Drain: no new workflows; the fleet dispatches what is left, each new job ending at once.
        submitter.stop.set()
        submitter.join()
        control[0], control[2] = float(len(phases)), float(MODE_DRAIN)
        loops.phase = probe.phase = statements.phase = len(phases)
        t_drain = time.monotonic()
        connection.close()
        while time.monotonic() - t_drain < args.drain and DbMeter.open_jobs(prefix) > 0:
            time.sleep(2)
        drain_s = time.monotonic() - t_drain
        control[2] = float(MODE_STOP)
        for _ in range(len(fleet) + 1):
            try:
                index, payload = out_q.get(timeout=max(args.runtime * 2, 120))
            except queue.Empty:  # a client that never answered: reported as missing below
                break
            results[index] = payload
        for p in [*fleet, readers]:
            p.join(timeout=30)
    finally:
        control[2] = float(MODE_STOP)
        submitter.stop.set()
        loops.stop.set()
        cpu.stop.set()
        probe.stop.set()
        statements.stop.set()
        for proc in (beat, worker, server, *([monitor] if monitor else [])):
            server_stop(proc)
        for path in log_dir.glob(f"beat-schedule-{os.getpid()}*"):
            path.unlink()
    fleet_results = [results[i] for i in range(len(fleet)) if i in results]
    reader_result = results.get(-1, {})
    for ph in phases:
        i, wall = ph["phase"], ph["wall_s"]
        calls = {k: lat_stats(v, wall) for k, v in merge_phase(fleet_results, i).items()}
        calls["submit"] = lat_stats([ms for p, ms, _ in submitter.records if p == i], wall)
        ph["pilot_calls"] = calls
        ph["pilot_call_errors"] = sum(
            n for r in fleet_results for k, n in r["errors"].items() if k.startswith(f"{i}|")
        )
        late = [v for r in fleet_results for v in r["late_ms"].get(str(i), [])]
        ph["client_late_p99_ms"] = round(percentile(late, 0.99), 1)
        ph["monitor"] = {
            page: {k: v for k, v in lat_stats(vals, wall).items() if k != "p99_ms"}
            for page, vals in reader_result.get("pages", {}).get(str(i), {}).items()
        }
        ph["rollup_lag_s"] = probe.summary(i)
        ph["loops"] = loops.summary(i)
        ph["postgres_statements"] = statements.summary(i)
        ph["missed"] = judge(ph, ph["offered"])
        ph["meets_targets"] = not ph["missed"]
    report["phases"] = phases
    first_limit = next((ph for ph in phases if ph["missed"]), None)
    report["limit"] = (
        {"phase": first_limit["phase"], "multiplier": first_limit["multiplier"], "missed": first_limit["missed"],
         "busiest_process_kind": max(first_limit["cpu"]["cores_used"].items(), key=lambda kv: kv[1])[0]}
        if first_limit else "not reached: raise --phases"
    )  # fmt: skip
    report["drain_s"] = round(drain_s, 1)
    report["monitor_errors"] = {k: reader_result.get(k) for k in ("errors", "error_samples")}
    report["client_cpu_s"] = round(sum(r["cpu_s"] for r in fleet_results), 1)
    # Calls still due when the drain ended (its time was up): the reconciliation then names the
    # jobs left open. A client process that sent no records at all is counted too.
    report["calls_abandoned"] = {
        kind: sum(r.get("abandoned", {}).get(kind, 0) for r in fleet_results)
        for kind in ("heartbeat", "final")
    }
    report["client_processes_missing"] = len(fleet) - len(fleet_results)
    report["reconciliation"] = reconcile(prefix, fleet_results, submitter.n)
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["machine"]["core_loop_ms_at_end"] = core_loop_ms()
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    report_write(report, args.out, indent=1)


if __name__ == "__main__":
    main()
