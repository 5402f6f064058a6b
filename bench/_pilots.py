"""Lean pilot clients the benchmarks share: one keep-alive HTTP connection per thread (no
`requests`), the pilot's call bodies, gunicorn started and stopped by the benchmark, and an
open-loop pilot fleet (bench/production_day.py) that dispatches at an offered rate, heartbeats each
running job and sends its final update, some of them failures of mixed kinds."""

from __future__ import annotations

import contextlib
import heapq
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Conn:
    """One keep-alive HTTP/1.1 connection on a plain socket: the request written from a prepared
    header block, the reply read by its Content-Length or chunks. http.client parses every reply's
    headers with the email package, which costs the client more CPU than some calls cost the
    server; on two shared cores the client's CPU is CPU the server does not get. A call that finds
    the connection closed reconnects (up to 3 tries)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (
            f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            f"Authorization: Bearer {token}\r\n"
        ).encode()
        self.sock: socket.socket | None = None
        self.buf = b""

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        payload = body.encode() if body is not None else b""
        message = b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            method.encode(),
            path.encode(),
            self.head,
            len(payload),
            payload,
        )
        for attempt in range(3):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.buf = b""
                self.sock.sendall(message)
                return self._reply()
            except (OSError, ValueError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.buf += chunk

    def _until(self, mark: bytes) -> bytes:
        """The buffered bytes up to `mark` (consumed with it)."""
        while (at := self.buf.find(mark)) < 0:
            self._fill()
        line, self.buf = self.buf[:at], self.buf[at + len(mark) :]
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _reply(self) -> tuple[int, bytes]:
        status_line, *lines = self._until(b"\r\n\r\n").split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"content-length" in headers:
            data = self._take(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                parts.append(self._take(size))
                self._take(2)
            self._until(b"\r\n")  # no trailers: the empty line after the last chunk
            data = b"".join(parts)
        else:  # the body runs to the end of the connection
            with contextlib.suppress(ConnectionResetError):
                while True:
                    self._fill()
            data, self.buf = self.buf, b""
            headers[b"connection"] = b"close"
        if headers.get(b"connection") == b"close":
            self.close()
        return status, data

    def post(self, path: str, payload: Any) -> tuple[int, Any]:
        status, data = self.request("POST", path, json.dumps(payload))
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {}


def acquire_body(queue: str, node: str, n_jobs: int = 1) -> dict[str, Any]:
    return {
        "site_name": queue,
        "prod_source_label": "managed",
        "node": node,
        "computing_element": "bench-ce",
        "memory": 16000,
        "disk_space": 100000,
        "n_jobs": n_jobs,
        "timeout": 60,
    }


def update_body(job: list[Any], state: str, queue: str, **extra: Any) -> dict[str, Any]:
    """The pilot's update_job body for `job` = [pandaid, attemptNr, lease]: a heartbeat (running) or
    a final update (finished / failed; `extra` adds or overrides fields such as error codes)."""
    pandaid, attempt, lease = job
    body: dict[str, Any] = {
        "job_id": pandaid,
        "job_status": state,
        "attempt_nr": attempt,
        "lease": lease,
        "node": "bench-wn007",
        "site_name": queue,
        "cpu_consumption_time": 600,
        "cpu_consumption_unit": "s",
        "core_count": 1,
        "max_rss": 1500000,
        "max_vmem": 2500000,
        "max_pss": 1400000,
        "avg_rss": 1200000,
        "pilot_id": "bench|PR|3.10.0",
        "batch_id": "12345",
        "cpu_architecture_level": "x86_64-v3",
    }
    if state in ("finished", "failed"):
        body.update(
            {
                "trans_exit_code": 0,
                "pilot_error_code": 0,
                "exe_error_code": 0,
                "n_events": 100,
                "start_time": "2026-01-01 00:00:00",
                "end_time": "2026-01-01 01:00:00",
            }
        )
    if state == "finished":
        body["job_output_report"] = json.dumps(
            {
                f"bench_{pandaid}.root": {
                    "guid": f"{pandaid:08d}-0000-0000-0000-000000000000",
                    "fsize": 123456,
                    "adler32": "0a0b0c0d",
                }
            }
        )
    body.update(extra)
    return body


# The failures a final update reports, with the retry rule each meets (dispatcher/retry.py):
# preemption is retried, an OOM kill is retried with more memory (re-brokered), a payload error is
# final and prunes the job's descendants.
FAILURES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("preempted", {"pilot_error_code": 1379, "pilot_error_diag": "preempted by the batch system"}),
    ("oom", {"exe_error_code": 137, "trans_exit_code": 137, "max_rss": 3_900_000}),
    ("payload", {"exe_error_code": 1, "trans_exit_code": 1, "exe_error_diag": "pipetask failed"}),
)


# --- gunicorn ---------------------------------------------------------------------------------------


def server_start(
    db_url: str,
    workers: int,
    threads: int,
    port: int,
    extra: list[str],
    env_extra: dict[str, str] | None = None,
    kind: str = "gunicorn",
) -> subprocess.Popen[bytes]:
    """The WSGI server on `db_url`, in its own session; returns once it answers. `kind` is gunicorn
    (gthread: `threads` per worker, as deployed) or granian (Rust HTTP, `threads` blocking threads
    per worker running the WSGI application), for comparing the HTTP layer's cost per call."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "AILURO_LOG_LEVEL": "WARNING",
        "AILURO_PILOT_AUTH": "token",
        "AILURO_DATA_DIR": str(ROOT / "var" / "bench"),
        **(env_extra or {}),
    }
    command = (
        _granian_command(workers, threads, port)
        if kind == "granian"
        else _gunicorn_command(workers, threads, port)
    )
    proc = subprocess.Popen(
        [*command, *extra],
        cwd=ROOT,
        env=env,
        # The server's own output (granian writes its warnings to stdout) goes to stderr: stdout
        # is the benchmark's JSON.
        stdout=2,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")  # answered by the pilot lane too
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{kind} did not start")


def _granian_command(workers: int, threads: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "config.wsgi:application",
        "--interface",
        "wsgi",
        "--http",
        "1",
        "--no-ws",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--backlog",
        "2048",
        "--log-level",
        "warning",
    ]


def _gunicorn_command(workers: int, threads: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--keep-alive",
        "75",
        "--backlog",
        "2048",
        # As in production (docs/operator-guide/deployment.md): one listening socket per worker,
        # so the kernel spreads connections over the workers instead of the first worker to wake
        # accepting a whole burst of keep-alive connections and running them under one GIL.
        "--reuse-port",
        "--log-level",
        "warning",
    ]


def server_stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group the benchmark started, SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- the open-loop fleet ------------------------------------------------------------------------------

# control[0]: phase index (-1 before the first); control[1]: offered-load multiplier;
# control[2]: mode (0 run, 1 drain: every new job finishes at once, 2 stop dispatching).
MODE_RUN, MODE_DRAIN, MODE_STOP = 0, 1, 2


class FleetProcess:
    """One client process: a dispatch clock at rate × multiplier / processes, a heap of due calls
    (heartbeats every `hb_interval_s`, the final update after `runtime_s`), `threads` workers
    taking due calls. Everything is recorded per phase; `result()` is what the parent receives."""

    def __init__(self, cfg: dict[str, Any], control: Any, index: int) -> None:
        self.cfg = cfg
        self.control = control
        self.index = index
        self.rng = random.Random(cfg["seed"] + index)
        self.heap: list[tuple[float, int, str, list[Any]]] = []
        self.seq = 0
        self.cv = threading.Condition()
        self.lat: dict[tuple[int, str], array[float]] = {}
        self.errors: dict[tuple[int, str], int] = {}
        self.late: dict[int, array[float]] = {}
        self.dispatches: list[tuple[int, int, float]] = []
        self.finals: list[tuple[int, int, str, bool, float]] = []
        self.lock = threading.Lock()

    def _push(self, due: float, kind: str, job: list[Any]) -> None:
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (due, self.seq, kind, job))
            self.cv.notify()

    def _record(self, phase: int, kind: str, dt: float, ok: bool) -> None:
        with self.lock:
            self.lat.setdefault((phase, kind), array("f")).append(dt * 1000)
            if not ok:
                self.errors[(phase, kind)] = self.errors.get((phase, kind), 0) + 1

    def clock(self) -> None:
        """Offers dispatch calls at the current rate until the mode says stop."""
        next_t = time.monotonic()
        while True:
            mode, mult = self.control[2], self.control[1]
            if mode == MODE_STOP:
                return
            rate = self.cfg["rate"] * mult / self.cfg["processes"]
            if rate <= 0:
                time.sleep(0.2)
                next_t = time.monotonic()
                continue
            next_t += self.rng.expovariate(rate)
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._push(next_t, "dispatch", [])

    def worker(self, slot: int) -> None:
        conn = Conn(self.cfg["port"], self.cfg["token"])
        queue = self.cfg["queue"]
        while True:
            with self.cv:
                while True:
                    if self.control[2] == MODE_STOP:
                        # The drain is over (or gave up): what is still due is left undone and
                        # reported (`abandoned`), so the records reach the parent at once.
                        return
                    now = time.monotonic()
                    if self.heap and self.heap[0][0] <= now:
                        due, _, kind, job = heapq.heappop(self.heap)
                        break
                    self.cv.wait(min(self.heap[0][0] - now, 0.5) if self.heap else 0.5)
            if kind == "dispatch" and self.control[2] == MODE_STOP:
                continue
            phase = int(self.control[0])
            with self.lock:
                self.late.setdefault(phase, array("f")).append(max(now - due, 0.0) * 1000)
            try:
                self._call(conn, queue, slot, phase, kind, job)
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
                self._record(phase, kind, 0.0, False)

    def _call(self, conn: Conn, queue: str, slot: int, phase: int, kind: str, job: list[Any]) -> None:
        t0 = time.perf_counter()
        if kind == "dispatch":
            status, body = conn.post(
                "/api/v1/pilot/acquire_jobs", acquire_body(queue, f"wn{self.index:02d}-{slot:03d}")
            )
            dt = time.perf_counter() - t0
            jobs = (body.get("data") or {}).get("jobs") or [] if status == 200 and body.get("success") else []
            self._record(phase, "dispatch" if jobs else "dispatch_empty", dt, status == 200)
            drain = self.control[2] == MODE_DRAIN
            for j in jobs:
                item = [j["PandaID"], j["attemptNr"], j["lease"]]
                with self.lock:
                    self.dispatches.append((item[0], item[1], time.time()))
                runtime = 0.2 if drain else self.cfg["runtime_s"] * self.rng.uniform(0.7, 1.3)
                start = time.monotonic()
                beat = self.cfg["hb_interval_s"]
                t = beat * self.rng.uniform(0.2, 1.0)
                while not drain and t < runtime:
                    self._push(start + t, "heartbeat", item)
                    t += beat
                self._push(start + runtime, "final", item + [drain])
            return
        if kind == "heartbeat":
            status, body = conn.post("/api/v1/pilot/update_job", update_body(job, "running", queue))
            ok = status == 200 and bool(body.get("success")) and body["data"]["StatusCode"] == 0
            self._record(phase, "heartbeat", time.perf_counter() - t0, ok)
            return
        pandaid, attempt, lease, drain = job
        state, extra, label = "finished", {}, "finished"
        if not drain and self.rng.random() < self.cfg["fail_fraction"]:
            label, extra = self.rng.choice(FAILURES)
            state = "failed"
        sent = time.time()  # the attempt ended no earlier than this
        status, body = conn.post(
            "/api/v1/pilot/update_job", update_body([pandaid, attempt, lease], state, queue, **extra)
        )
        ok = status == 200 and bool(body.get("success")) and body["data"]["StatusCode"] == 0
        self._record(phase, "final", time.perf_counter() - t0, ok)
        with self.lock:
            self.finals.append((pandaid, attempt, label, ok, sent))

    def run(self) -> dict[str, Any]:
        cpu0 = sum(os.times()[0:2])
        threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(self.cfg["threads"])]
        for t in threads:
            t.start()
        self.clock()
        with self.cv:
            self.heap = [h for h in self.heap if h[2] != "dispatch"]
            heapq.heapify(self.heap)
            self.cv.notify_all()
        for t in threads:
            t.join()
        abandoned: dict[str, int] = {}
        for _, _, kind, _ in self.heap:
            if kind != "dispatch":
                abandoned[kind] = abandoned.get(kind, 0) + 1
        return {
            "abandoned": abandoned,
            "latency_ms": {f"{p}|{k}": list(v) for (p, k), v in self.lat.items()},
            "errors": {f"{p}|{k}": n for (p, k), n in self.errors.items()},
            "late_ms": {str(p): list(v) for p, v in self.late.items()},
            "dispatches": self.dispatches,
            "finals": self.finals,
            "cpu_s": sum(os.times()[0:2]) - cpu0,
        }


def fleet_process_main(cfg: dict[str, Any], control: Any, index: int, out: Any) -> None:
    """Entry point of one forked client process: runs until the mode is stop and its jobs ended,
    then puts its records on `out`."""
    out.put((index, FleetProcess(cfg, control, index).run()))
