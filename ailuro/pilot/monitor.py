"""Measuring a payload: its process tree's RSS, PSS and CPU, read from /proc (Linux).

The payload runs as the leader of its own session, so its tree is every process whose session id
is the payload's pid — including grandchildren that re-parented to init after their parent died,
which a parent/child walk would miss. A process that calls setsid() itself escapes; PanDA's pilot
has the same blind spot with process groups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Sample:
    rss_kb: int = 0
    pss_kb: int = 0
    cpu_s: float = 0.0
    nprocs: int = 0


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def session_pids(sid: int) -> list[int]:
    """Pids whose session id is `sid` (field 6 of /proc/<pid>/stat)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] is state (index 3 of stat), so session is fields[3]; zombies hold no memory.
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sample_session(sid: int, *, with_pss: bool = True) -> Sample:
    """Sum RSS (and PSS, which splits shared pages fairly) and CPU (user+system, including reaped
    children's) over the session's live processes."""
    total = Sample()
    for pid in session_pids(sid):
        fields = _stat_fields(pid)
        if not fields:
            continue
        # After the state field: utime=11, stime=12, cutime=13, cstime=14, rss pages=21.
        ticks = sum(int(x) for x in fields[11:15])
        total.cpu_s += ticks / CLK_TCK
        rss = int(fields[21]) * PAGE_KB
        total.rss_kb += rss
        if with_pss:
            pss = _pss_kb(pid)
            total.pss_kb += rss if pss is None else pss
        total.nprocs += 1
    return total


def oom_kill_count(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (cgroup v2 `memory.events`, v1 `memory.oom_control`), or None when no counter is readable.

    A payload runs in its pilot's cgroup (the batch job's), so a rise of this counter while the
    payload ran, and its death by SIGKILL, tell an out-of-memory kill from another SIGKILL.
    """
    try:
        text = (proc / "self" / "cgroup").read_text()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        relative = path.lstrip("/")
        if hierarchy == "0" and not controllers:
            candidates += [cgroup_root / relative / "memory.events", cgroup_root / "memory.events"]
        elif "memory" in controllers.split(","):
            v1 = cgroup_root / "memory"
            candidates += [v1 / relative / "memory.oom_control", v1 / "memory.oom_control"]
    for candidate in candidates:
        try:
            for entry in candidate.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        except OSError:
            continue
    return None
