"""What bench/production_day.py measures besides the pilots' calls: the monitor readers (a forked
process of threads cycling the shifter's pages), the rollup lag probe, the loop-lag sampler, the
database's growth, and the Celery processes it starts and stops."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def celery_start(
    args: list[str], log: Path, db_url: str, env_extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    """A Celery process (worker or beat) of the project's app on `db_url`, in its own session."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AILURO_LOG_LEVEL": "WARNING",
        **env_extra,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-q", "-A", "config", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Accept": "text/html"})
    reply = conn.getresponse()
    return reply.status, reply.read()


# --- monitor readers --------------------------------------------------------------------------------


def reader_pages(task: int, workflow: int, queue: str) -> list[tuple[str, str]]:
    """(name, URL) of the shifter's pages: windows and filters, as bench/monitor.py measures them."""
    return [
        ("jobs_12h", "/jobs/?hours=12"),
        ("jobs_7d", "/jobs/?days=7"),
        ("jobs_failed_site", "/jobs/?hours=12&computingsite=Q_007&jobstatus=failed"),
        ("jobs_bench_queue", f"/jobs/?hours=6&computingsite={queue}"),
        ("errors_12h", "/errors/?hours=12"),
        ("errors_7d", "/errors/?days=7"),
        ("dash", "/dash/"),
        ("dash_7d", "/dash/?days=7"),
        ("task", f"/task/{task}/"),
        ("workflow", f"/workflow/{workflow}/"),
        ("overview", "/"),
        ("tasks", "/tasks/"),
        ("workflows", "/workflows/"),
        ("sites", "/sites/"),
        ("users", "/users/"),
        ("loops", "/loops/"),
    ]


def reader_process_main(
    port: int, pages: list[tuple[str, str]], n: int, control: Any, out: Any, think_s: float = 0.0
) -> None:
    """`n` reader threads, each cycling the pages from its own offset until the mode is stop (2),
    reading each page for `think_s` seconds (±50 %) before the next (0: back to back);
    puts (-1, {"pages": {phase: {page: [ms, ...]}}, "errors": k}) on `out`."""
    lat: dict[str, dict[str, list[float]]] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def read(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = random.Random(slot)
        i = slot * 3
        while control[2] != 2:
            name, url = pages[i % len(pages)]
            i += 1
            phase = str(int(control[0]))
            t0 = time.perf_counter()
            try:
                status, _ = _get(conn, url)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                if status != 200:
                    errors.append(f"{url}: {status}")
                lat.setdefault(phase, {}).setdefault(name, []).append(dt)
            pause = think_s * rng.uniform(0.5, 1.5)
            while pause > 0 and control[2] != 2:
                time.sleep(min(pause, 0.5))
                pause -= 0.5

    threads = [threading.Thread(target=read, args=(slot,)) for slot in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((-1, {"pages": lat, "errors": len(errors), "error_samples": errors[:5]}))


# --- the database -----------------------------------------------------------------------------------


class DbMeter:
    @staticmethod
    def backend_pids(db: str) -> list[tuple[int, str]]:
        """The backends connected to `db` (but this one), with their application_name."""
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(
                "SELECT pid, application_name FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [db],
            )
            return [(row[0], row[1]) for row in cur.fetchall()]

    @staticmethod
    def sizes() -> dict[str, int]:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            db = cur.fetchone()[0]  # type: ignore[index]
            cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'dispatcher\\_%%'"
            )
            dispatcher = cur.fetchone()[0]  # type: ignore[index]
        return {"database": int(db), "dispatcher_tables": int(dispatcher)}

    @staticmethod
    def io() -> dict[str, float]:
        """The cluster's WAL and buffer counters and the database's block reads (cumulative)."""
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(
                "SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed + b.checkpoints_req,"
                " b.buffers_checkpoint + b.buffers_clean + b.buffers_backend, b.buffers_backend,"
                " d.blks_hit, d.blks_read"
                " FROM pg_stat_wal w, pg_stat_bgwriter b, pg_stat_database d WHERE d.datname = current_database()"
            )
            row = cur.fetchone()
        names = ("wal_records", "wal_fpi", "wal_bytes", "checkpoints", "buffers_written", "buffers_backend",
                 "blks_hit", "blks_read")  # fmt: skip
        return dict(zip(names, (float(v) for v in row), strict=True))  # type: ignore[arg-type]

    @staticmethod
    def io_delta(a: dict[str, float], b: dict[str, float], wall: float) -> dict[str, Any]:
        """A phase's WAL volume (and the share of it that is full-page images after checkpoints),
        buffers written out (by backends themselves: shared_buffers too small for the writes), and
        the share of block reads shared_buffers answered."""
        d = {k: b[k] - a[k] for k in a}
        reads = d["blks_hit"] + d["blks_read"]
        return {
            "wal_mb_per_s": round(d["wal_bytes"] / wall / 2**20, 2) if wall else None,
            "wal_full_page_images_per_record": round(d["wal_fpi"] / d["wal_records"], 3)
            if d["wal_records"]
            else None,
            "checkpoints": int(d["checkpoints"]),
            "buffers_written_per_s": round(d["buffers_written"] / wall, 1) if wall else None,
            "buffers_written_by_backends_per_s": round(d["buffers_backend"] / wall, 1) if wall else None,
            "shared_buffers_hit_ratio": round(d["blks_hit"] / reads, 4) if reads else None,
            "blocks_read_per_s": round(d["blks_read"] / wall, 1) if wall else None,
        }

    @staticmethod
    def growth(a: dict[str, int], b: dict[str, int], jobs: int) -> dict[str, Any]:
        return {
            "database_bytes": b["database"] - a["database"],
            "dispatcher_tables_bytes": b["dispatcher_tables"] - a["dispatcher_tables"],
            "jobs_submitted": jobs,
            "bytes_per_job": round((b["database"] - a["database"]) / jobs) if jobs else None,
        }

    @staticmethod
    def open_jobs(prefix: str) -> int:
        from django.db import connection

        from dispatcher.states import JOB_FINAL

        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM dispatcher_job j JOIN dispatcher_workflow w ON w.id = j.workflow_id"
                " WHERE w.name LIKE %s AND NOT (j.jobstatus = ANY(%s))",
                [prefix + "%", sorted(JOB_FINAL)],
            )
            return int(cur.fetchone()[0])  # type: ignore[index]


class StatementSampler(threading.Thread):
    """Every `interval` s: the statements PostgreSQL is running for the bench database (active
    backends in pg_stat_activity), normalised (literals and parameters as `?`), counted per phase
    by whose they are (application_name). A statement's share of the samples times the interval is
    the time backends spent in it (running or waiting): where PostgreSQL's time goes, without
    pg_stat_statements (which needs the server restarted)."""

    _LITERAL = re.compile(r"'(?:[^']|'')*'|\$\d+|\b\d+(?:\.\d+)?\b")
    _LISTS = re.compile(r"\((?:\s*\?\s*,)+\s*\?\s*\)")

    def __init__(self, db: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.db, self.interval = db, interval
        self.phase = -1
        self.stop = threading.Event()
        self.samples: dict[int, int] = {}
        self.active: dict[int, dict[tuple[str, str], int]] = {}
        self.waits: dict[int, dict[str, int]] = {}

    @classmethod
    def normalise(cls, sql: str) -> str:
        text = cls._LISTS.sub("(?, …)", cls._LITERAL.sub("?", " ".join(sql.split())))
        return text if len(text) <= 160 else text[:159] + "…"

    def run(self) -> None:
        from django.db import connection

        with connection.cursor() as cur:
            while not self.stop.wait(self.interval):
                cur.execute(
                    "SELECT application_name, query, coalesce(wait_event_type || ':' || wait_event, 'CPU')"
                    " FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                    " AND pid <> pg_backend_pid()",
                    [self.db],
                )
                phase = self.phase
                self.samples[phase] = self.samples.get(phase, 0) + 1
                active, waits = self.active.setdefault(phase, {}), self.waits.setdefault(phase, {})
                for app, sql, wait in cur.fetchall():
                    key = (app or "other", self.normalise(sql or ""))
                    active[key] = active.get(key, 0) + 1
                    waits[wait] = waits.get(wait, 0) + 1
        connection.close()

    def summary(self, phase: int, top: int = 15) -> dict[str, Any]:
        """The phase's busiest statements: mean active backends each (≈ cores when not waiting)."""
        n = max(self.samples.get(phase, 0), 1)
        ranked = sorted(self.active.get(phase, {}).items(), key=lambda kv: -kv[1])
        return {
            "samples": self.samples.get(phase, 0),
            "active_backends_mean": round(sum(self.active.get(phase, {}).values()) / n, 3),
            # What the active backends were doing: on CPU, or waiting (type:event), busiest first.
            "by_wait": {
                k: round(v / n, 3)
                for k, v in sorted(self.waits.get(phase, {}).items(), key=lambda kv: -kv[1])[:12]
            },
            "top": [
                {"client": app, "backends": round(count / n, 3), "statement": sql}
                for (app, sql), count in ranked[:top]
            ],
        }


# --- loops ------------------------------------------------------------------------------------------


SAMPLE_PERIOD_S = 5


class LoopSampler(threading.Thread):
    """Every 5 s: each loop's lag (now − its last completed run since the bench started, from LoopStatus)
    and /readyz."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.phase = -1
        self.stop = threading.Event()
        # phase -> loop -> [(seconds into the phase, lag)]
        self.samples: dict[int, dict[str, list[tuple[float, float]]]] = {}
        self.phase_started: dict[int, float] = {}  # monotonic time of each phase's first sample
        self.readyz: dict[int, Counter_] = {}
        self.durations: dict[str, float] = {}

    def run(self) -> None:
        from django.db import connection

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        with connection.cursor() as cur:
            cur.execute("SELECT now()")
            started = cur.fetchone()[0]  # type: ignore[index]
        while not self.stop.wait(SAMPLE_PERIOD_S):
            phase = self.phase
            now = time.monotonic()
            into = now - self.phase_started.setdefault(phase, now)
            with connection.cursor() as cur:
                # A loop's lag counts from its last run or from the bench's start, whichever is
                # later: an earlier run's last success is not this day's lag.
                cur.execute(
                    "SELECT name, extract(epoch FROM now() - greatest(succeeded_at, %s)), duration_s"
                    " FROM core_loopstatus",
                    [started],
                )
                rows = cur.fetchall()
            for name, lag, duration in rows:
                if lag is not None:
                    self.samples.setdefault(phase, {}).setdefault(name, []).append((into, float(lag)))
                self.durations[name] = max(self.durations.get(name, 0.0), float(duration or 0))
            try:
                status, _ = _get(conn, "/readyz")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status = 0
            self.readyz.setdefault(phase, Counter_()).add(status)
        connection.close()

    def stalled(self, phase: int) -> bool:
        return any(v.get("within_period") is False for v in self.summary(phase).values())

    def summary(self, phase: int) -> dict[str, Any]:
        from config.loops import LOOPS

        out: dict[str, Any] = {}
        samples = self.samples.get(phase, {})
        for loop in LOOPS:
            timeline = samples.get(loop.name, [])
            lags = [lag for _, lag in timeline]
            allowed = loop.period_s + self.durations.get(loop.name, 0.0) + SAMPLE_PERIOD_S
            # Where in the phase the worst lag was, and for how long the loop was late: a stall
            # at the start and a loop that never keeps up look alike in the maximum alone.
            worst = max(timeline, key=lambda sample: sample[1]) if timeline else None
            out[loop.name] = {
                "period_s": loop.period_s,
                "max_lag_s": round(max(lags), 1) if lags else None,
                "max_lag_at_s": round(worst[0]) if worst else None,
                "late_s": SAMPLE_PERIOD_S * sum(1 for lag in lags if lag > allowed),
                # An hourly loop that has not come due within the phase is not judged.
                "within_period": (max(lags) <= allowed) if lags and loop.period_s <= 600 else None,
            }
        out["readyz_statuses"] = self.readyz.get(phase, Counter_()).counts
        return out


class Counter_:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, status: int) -> None:
        self.counts[str(status)] = self.counts.get(str(status), 0) + 1


# --- rollup lag ---------------------------------------------------------------------------------------


class RollupProbe(threading.Thread):
    """Every 10 s: the bench queue's finished jobs counted in SQL, then `/jobs/?json` for that queue
    and state polled until its total reaches the count; lag = the time until it does."""

    def __init__(self, port: int, queue: str, since: float) -> None:
        super().__init__(daemon=True)
        self.port, self.queue, self.since = port, queue, since
        self.phase = -1
        self.stop = threading.Event()
        self.lags: dict[int, list[float | None]] = {}

    def run(self) -> None:
        from django.db import connection

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        since = datetime.fromtimestamp(self.since, UTC)
        url = f"/jobs/?json&hours=24&computingsite={self.queue}&jobstatus=finished&display_limit=1"
        while not self.stop.wait(10):
            phase = self.phase
            with connection.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM dispatcher_job WHERE computingsite = %s AND jobstatus = 'finished'"
                    " AND statechangetime >= %s",
                    [self.queue, since],
                )
                truth = int(cur.fetchone()[0])  # type: ignore[index]
            t0 = time.monotonic()
            lag: float | None = None
            while not self.stop.is_set() and time.monotonic() - t0 < 90:
                try:
                    conn.request("GET", url, headers={"Accept": "application/json"})
                    reply = conn.getresponse()
                    body = reply.read()
                    total = json.loads(body).get("total", 0) if reply.status == 200 else -1
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    total = -1
                if isinstance(total, int) and total >= truth:
                    lag = time.monotonic() - t0
                    break
                time.sleep(0.5)
            self.lags.setdefault(phase, []).append(lag)
        connection.close()

    def summary(self, phase: int) -> dict[str, Any]:
        lags = self.lags.get(phase, [])
        seen = [x for x in lags if x is not None]
        return {
            "probes": len(lags),
            "not_visible_within_90s": len(lags) - len(seen),
            "max": round(max(seen), 2) if seen and len(seen) == len(lags) else None,
            "median": round(sorted(seen)[len(seen) // 2], 2) if seen else None,
        }
