"""Helpers the benchmarks share: a free loopback port, CPU time from /proc, a percentile, a
scratch database, the monitor's summaries checked against a rebuild. The benchmarks run as scripts
(`python bench/<name>.py`), so this folder is on their import path and they import this module as
`_common`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (the first is field 3, the state);
    None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU time of a process (fields 14 and 15); 0 once it is gone. With `reaped`,
    also that of its children it has waited for (fields 16 and 17): summed over a process tree's
    live members, the tree's CPU including the members that exited meanwhile."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / _TICK


def parent_pid(pid: int) -> int:
    """The parent of a process (field 4); 0 once it is gone."""
    fields = _stat(pid)
    return int(fields[1]) if fields is not None else 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def machine_facts() -> dict[str, Any]:
    """The machine a report was measured on: its CPUs, their model, the load when it started, and
    the speed of one of its cores (`core_loop_ms`)."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "",
    )  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "core_loop_ms": core_loop_ms(),
    }


def core_loop_ms() -> float:
    """CPU milliseconds of a fixed 5M-step Python loop, the best of 3: how fast a core of this
    machine is at that moment, read in the thread's own CPU time, so a busy machine (waiting for a
    core) does not count, but a slower core does. Machines of one kind differ, and one machine
    from hour to hour (its neighbours on the host). Plain Python only: a server's calls, heavy on
    memory and system calls, may differ by another factor."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.thread_time() - started)
    return round(best * 1000, 1)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q < 1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


# The comment a benchmark puts on each database it creates: only such a database is ever emptied
# or dropped by a benchmark, so a mistyped --db cannot wipe a real one.
SCRATCH_MARK = "ailuro benchmark scratch database: benchmarks may empty or drop it"


class NotScratch(SystemExit):
    """A benchmark was asked to empty or drop a database it did not create."""


def database_claim(admin_url: str, name: str, *, drop: bool = False) -> bool:
    """Make `name` a benchmark's scratch database: create it (marked) when missing; when it exists,
    go on only if a benchmark created it (its comment is SCRATCH_MARK), else raise NotScratch and
    touch nothing. With `drop`, an existing scratch database is dropped and created afresh.
    Returns whether the database was created now. `admin_url` points at a database the role may
    connect to (postgres)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if row is not None and row[0] != SCRATCH_MARK:
            raise NotScratch(
                f"database {name} exists and was not created by a benchmark: refusing to empty it; "
                "pass another name (--db) or drop it yourself"
            )
        if row is not None and not drop:
            return False
        if row is not None:
            conn.execute(f'DROP DATABASE "{name}"')  # a scratch database, name from our command line
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{SCRATCH_MARK}'")
        return True


# --- a server on a scratch database -------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def scratch_database(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    database_claim(urlunsplit(parts._replace(path="/postgres")), name, drop=True)
    return urlunsplit(parts._replace(path=f"/{name}"))


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def worker_pid(master: int) -> int:
    for _ in range(200):
        children = Path(f"/proc/{master}/task/{master}/children")
        if children.exists():
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError("gunicorn started no worker")


def backend_pids(admin_url: str, database: str) -> list[int]:
    result = subprocess.run(
        ["psql", admin_url, "-Atc", f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'"],
        check=True,
        capture_output=True,
        text=True,
    )
    return [int(line) for line in result.stdout.split()]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report_write(report: dict[str, Any], out: str, *, indent: int = 2) -> None:
    """A benchmark's end: its JSON report written to `out` and printed on stdout."""
    text = json.dumps(report, indent=indent)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)


def in_scratch_test_database(name: str, run: Callable[[], dict[str, Any]]) -> None:
    """Set Django up on DATABASE_URL's PostgreSQL, run `run` in a scratch database made for it
    (`<name>_<pid>`, migrated like the test database) and dropped after it; print its report."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("AILURO_LOG_LEVEL", "WARNING")
    import django
    from django.conf import settings

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit(f"bench/{name}.py needs PostgreSQL: set DATABASE_URL=postgres://…")
    settings.DATABASES["default"]["TEST"]["NAME"] = f"bench_{name}_{os.getpid()}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        print(json.dumps(run(), indent=2))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def rollups_exact() -> bool:
    """Fold the whole change feed, then compare the job summary with a rebuild from the job rows."""
    from dispatcher.models import JobChange
    from pandamon import rollups
    from pandamon.models import JobSummary

    while rollups.rollups_fold():
        pass
    if JobChange.objects.exists():
        return False
    folded = set(JobSummary.objects.values_list("bucket", "jobstatus", "facet", "value", "count"))
    rollups.rollups_rebuild()
    rebuilt = set(JobSummary.objects.values_list("bucket", "jobstatus", "facet", "value", "count"))
    return bool(folded) and folded == rebuilt
