"""Running one payload: work dir, own session, limits, sampling, output streaming.

`run_payload` is independent of the server: the caller hands it callbacks for heartbeats (which
may answer "kill") and for output chunks, so it is tested without HTTP.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ailuro.pilot.diagnose import TAIL_BYTES
from ailuro.pilot.monitor import Sample, oom_kill_count, sample_session
from ailuro.protocol import (
    PILOT_ERROR_KILLED_BY_SERVER,
    PILOT_ERROR_MEMORY,
    PILOT_ERROR_PREEMPTED,
    PILOT_ERROR_WALLTIME,
)

# Largest output chunk sent in one append_log call; the server caps the total per attempt.
LOG_CHUNK_BYTES = 16 * 1024
# Grace between SIGTERM and SIGKILL of a payload being stopped.
KILL_GRACE_S = 3.0


@dataclass(frozen=True)
class Limits:
    memory_kb: int | None = None  # RSS of the whole tree; None: unlimited
    walltime_s: float | None = None


@dataclass
class PayloadResult:
    exit_code: int | None  # 128 + N when signal N ended it; None only before the payload ended
    pilot_error_code: int = 0
    pilot_error_diag: str = ""
    max_rss_kb: int = 0
    max_pss_kb: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    started_mono: float = 0.0  # time.monotonic() when the payload's process was started
    exited_mono: float = 0.0  # time.monotonic() when the payload's process ended
    samples: int = 0
    log_bytes: int = 0
    log_chunks: int = 0
    tail: bytes = b""  # the last TAIL_BYTES of the payload's output, for the diagnosis
    tail_complete: bool = True  # False: the output was longer than `tail`
    oom_killed: bool = False  # the kernel's OOM killer killed a process of this pilot's cgroup meanwhile
    extra: dict[str, str] = field(default_factory=dict)


# heartbeat(sample, wall_s) -> True when the server wants the payload killed
Heartbeat = Callable[[Sample, float], bool]
LogSink = Callable[[int, str], None]  # (sequence, text)


def container_runtime() -> str | None:
    """The first usable container runtime: apptainer/singularity, podman, or docker with a live
    daemon. Sites without one run plain commands."""
    for name in ("apptainer", "singularity", "podman"):
        if shutil.which(name):
            return name
    if shutil.which("docker") and Path("/var/run/docker.sock").exists():
        return "docker"
    return None


def payload_argv(command: str, *, workdir: Path, image: str = "", runtime: str | None = None) -> list[str]:
    """The argv that runs `command`: bash directly, or inside `image` when a runtime exists.

    The work dir is bind-mounted at the same path and is the working directory either way, so the
    payload sees the same files in both cases.
    """
    if not image or runtime is None:
        return ["/bin/bash", "-c", command]
    wd = str(workdir)
    if runtime in {"apptainer", "singularity"}:
        return [
            runtime,
            "exec",
            "--bind",
            f"{wd}:{wd}",
            "--pwd",
            wd,
            f"docker://{image}",
            "/bin/bash",
            "-c",
            command,
        ]
    return [runtime, "run", "--rm", "-v", f"{wd}:{wd}", "-w", wd, image, "/bin/bash", "-c", command]


class _OutputPump(threading.Thread):
    """Reads the payload's merged stdout/stderr, keeps a copy in the work dir and the last
    TAIL_BYTES in memory, and hands chunks of at most LOG_CHUNK_BYTES to the sink — at once when a
    chunk is full, otherwise on `flush`.

    It never stops reading before the payload closes its output, whatever fails (a full disk under
    the copy, the sink): a pump that stopped would block the payload on a full pipe."""

    def __init__(self, stream: object, copy_path: Path, sink: LogSink | None) -> None:
        super().__init__(daemon=True, name="payload-output")
        self.stream = stream
        self.copy_path = copy_path
        self.sink = sink
        self.lock = threading.Lock()
        self.pending = bytearray()
        self.tail = bytearray()
        self.tail_cut = False
        self.sequence = 0
        self.total = 0
        self.copy_error = ""

    def run(self) -> None:
        read = self.stream.read1  # type: ignore[attr-defined]
        try:
            copy: BinaryIO | None = self.copy_path.open("ab")
        except OSError as exc:
            copy, self.copy_error = None, str(exc)
        try:
            while True:
                data = read(65536)
                if not data:
                    break
                if copy is not None:
                    try:
                        copy.write(data)
                        copy.flush()
                    except OSError as exc:  # e.g. No space left on device: keep streaming
                        self.copy_error = str(exc)
                        with contextlib.suppress(OSError):
                            copy.close()
                        copy = None
                with self.lock:
                    self.pending += data
                    self.tail += data
                    if len(self.tail) > TAIL_BYTES:
                        del self.tail[: len(self.tail) - TAIL_BYTES]
                        self.tail_cut = True
                    full = len(self.pending) >= LOG_CHUNK_BYTES
                if full:
                    self.flush()
        finally:
            if copy is not None:
                with contextlib.suppress(OSError):
                    copy.close()

    def flush(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    return
                # Cut at a UTF-8 boundary so every chunk decodes on its own.
                cut = min(len(self.pending), LOG_CHUNK_BYTES)
                while cut < len(self.pending) and cut > 0 and (self.pending[cut] & 0xC0) == 0x80:
                    cut -= 1
                chunk = bytes(self.pending[:cut])
                del self.pending[:cut]
                self.sequence += 1
                sequence = self.sequence
            self.total += len(chunk)
            if self.sink is not None:
                self.sink(sequence, chunk.decode(errors="replace"))


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the payload's whole session, SIGKILL what is left after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=KILL_GRACE_S)
            # The leader is gone; make sure nothing of its group outlives it.
            with_group = True
            while with_group:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    with_group = False
                else:
                    time.sleep(0.05)
            return
        except subprocess.TimeoutExpired:
            continue


def run_payload(
    command: str,
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    limits: Limits = Limits(),  # noqa: B008  (frozen dataclass: immutable default)
    image: str = "",
    heartbeat: Heartbeat | None = None,
    heartbeat_s: float = 60.0,
    log_sink: LogSink | None = None,
    log_flush_s: float = 2.0,
    sample_s: float = 0.5,
    preempted: Callable[[], bool] = lambda: False,
    first_heartbeat_at_start: bool = False,
) -> PayloadResult:
    """Run `command` in `workdir` as the leader of a new session and watch it.

    1. Start bash (or the container runtime) with stdout+stderr on one pipe.
    2. Every `sample_s`: sample the session's RSS/PSS/CPU; stop it with 1212 when RSS exceeds the
       memory limit, 1213 past the walltime, 1379 when the pilot was told to stop (SIGTERM).
    3. Every `heartbeat_s`: call `heartbeat`; a True answer (server said tobekilled) stops it, 1144.
    4. Every `log_flush_s` and at the end: hand pending output to `log_sink`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    argv = payload_argv(command, workdir=workdir, image=image, runtime=container_runtime() if image else None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    oom_before = oom_kill_count()
    started = time.time()
    proc = subprocess.Popen(  # noqa: S603  (the job's own command, which is the point of a pilot)
        argv,
        cwd=workdir,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    t0 = time.monotonic()
    pump = _OutputPump(proc.stdout, workdir / "payload.out", log_sink)
    pump.start()
    result = PayloadResult(exit_code=None, started_at=started, started_mono=t0)
    # The pilot's first heartbeat says `running` as soon as the payload is up.
    next_beat = t0 if first_heartbeat_at_start else t0 + heartbeat_s
    next_flush = t0 + log_flush_s
    cpu_seen = 0.0
    stop: tuple[int, str] | None = None
    first = True
    while True:
        try:
            # The first sample comes early so that short payloads are measured too.
            proc.wait(timeout=min(sample_s, 0.05) if first else sample_s)
            break
        except subprocess.TimeoutExpired:
            pass
        first = False
        now = time.monotonic()
        sample = sample_session(proc.pid)
        result.samples += 1
        result.max_rss_kb = max(result.max_rss_kb, sample.rss_kb)
        result.max_pss_kb = max(result.max_pss_kb, sample.pss_kb)
        cpu_seen = max(cpu_seen, sample.cpu_s)
        wall = now - t0
        if limits.memory_kb is not None and sample.rss_kb > limits.memory_kb:
            stop = (
                PILOT_ERROR_MEMORY,
                f"payload exceeded its memory limit: RSS {sample.rss_kb} kB > {limits.memory_kb} kB",
            )
        elif limits.walltime_s is not None and wall > limits.walltime_s:
            stop = (PILOT_ERROR_WALLTIME, f"payload exceeded its walltime of {limits.walltime_s:.0f} s")
        elif preempted():
            stop = (PILOT_ERROR_PREEMPTED, "pilot received SIGTERM (preempted by the batch system)")
        elif heartbeat is not None and now >= next_beat:
            next_beat = now + heartbeat_s
            if heartbeat(sample, wall):
                stop = (PILOT_ERROR_KILLED_BY_SERVER, "job was killed by the server (tobekilled)")
        if stop is not None:
            _kill_session(proc)
            break
        if now >= next_flush:
            next_flush = now + log_flush_s
            pump.flush()
    proc.wait()
    result.exited_mono = time.monotonic()
    pump.join(timeout=10)
    pump.flush()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.ended_at = time.time()
    result.wall_s = time.monotonic() - t0
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.cpu_s = round(max(cpu_seen, reaped), 3)
    if after.ru_maxrss > before.ru_maxrss:
        # The kernel's high-water mark of the largest process this pilot reaped, which a sample
        # taken every `sample_s` can miss: a new maximum over this pilot's children is this
        # payload's (kB on Linux).
        result.max_rss_kb = max(result.max_rss_kb, after.ru_maxrss)
    oom_after = oom_kill_count()
    result.oom_killed = oom_before is not None and oom_after is not None and oom_after > oom_before
    result.log_bytes = pump.total
    result.log_chunks = pump.sequence
    result.tail = bytes(pump.tail)
    result.tail_complete = not pump.tail_cut
    if pump.copy_error:
        result.extra["copy_error"] = pump.copy_error
    code = proc.returncode
    result.exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128+N, as shells say
    if stop is None and code < 0:
        # A batch system's cancel signals the payload as well as the pilot, in no set order: a
        # payload killed by a signal right as the pilot is told to stop was preempted too.
        deadline = time.monotonic() + 1.0
        while not preempted() and time.monotonic() < deadline:
            time.sleep(0.05)
        if preempted():
            stop = (PILOT_ERROR_PREEMPTED, f"payload killed by signal {-code} while the pilot was preempted")
    if stop is not None:
        result.pilot_error_code, result.pilot_error_diag = stop
    if image and argv[0] != "/bin/bash":
        result.extra["container"] = shlex.join(argv[:-2])
    return result
