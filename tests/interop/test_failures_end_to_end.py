"""Failures that explain themselves, end to end: real `ailuro pilot` processes against a gunicorn
server on the test PostgreSQL, a real Celery worker and beat running every loop on the Redis
broker, and payloads that fail the way pipelines do.

One workflow holds the four cases, submitted through the service with explicit jobs:

* `conn` prints a SQLAlchemy `OperationalError … Connection refused` traceback and exits 1 on its
  first attempt (a marker file in the test's directory says which attempt runs): the connection
  rule retries it and the second attempt finishes;
* `keyerr` prints a `KeyError` traceback: not retried, and its child `visit` is pruned;
* `hog` asks 200 MB and allocates ~420 MB at once: the pilot stops it (1212) with its measured
  peak RSS, the retry asks at least 420 MB × margin, and the second attempt finishes;
* `preempt` is running when the batch system cancels the job: SIGTERM to the pilot's process
  group and to the payload's; the pilot reports 1379 and a fresh pilot finishes the retry.

Every assertion reads what the product stored or serves: the job and attempt rows, the server's
`/job/<id>/?json` and `/errors/?json` (after the monitor's rollup loop has folded the failures).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.models import LoopStatus
from dispatcher.models import Job, JobAttempt, RetryRule, Task
from dispatcher.services import NewJob, workflow_submit
from pandamon.errortext import message_template
from tests.ailuro.server import ROOT, AiluroServer, pilot_argv, pilot_token_file
from tests.factories import QueueFactory, UserFactory
from tests.interop.celery_procs import beat_start, broker_purge, process_stop, worker_start

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("default_retry_rules"),
]

PY = sys.executable
QUEUE = "FAILURES_Q"
HOG_MB = 420
REFUSED = (
    'sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "db.example.org" '
    "(10.0.0.5), port 5432 failed: Connection refused"
)
# What a butler command prints when its registry database refuses the connection (SQLAlchemy 2
# wraps psycopg2's error and chains the two tracebacks).
CONN_PAYLOAD = f"""\
import pathlib, sys
marker = pathlib.Path(sys.argv[1])
if marker.exists():
    print("registry reachable: ingested 12 raw exposures")
    sys.exit(0)
marker.write_text("attempt 1 ran")
print("INFO 2026-12-06T11:24:30.123+00:00 lsst.daf.butler ()(_butler.py:312) - loading butler", flush=True)
sys.stderr.write('''Traceback (most recent call last):
  File "/opt/lsst/conda/envs/lsst-scipipe/lib/python3.11/site-packages/sqlalchemy/engine/base.py", line 145, in __init__
    self._dbapi_connection = engine.raw_connection()
  File "/opt/lsst/conda/envs/lsst-scipipe/lib/python3.11/site-packages/psycopg2/__init__.py", line 122, in connect
    conn = _connect(dsn, connection_factory=connection_factory, **kwasync)
psycopg2.OperationalError: connection to server at "db.example.org" (10.0.0.5), port 5432 failed: Connection refused
\tIs the server running on that host and accepting TCP/IP connections?

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/opt/lsst/daf_butler/python/lsst/daf/butler/registry/databases/postgresql.py", line 102, in makeEngine
    return sqlalchemy.engine.create_engine(uri, pool_size=1).connect()
{REFUSED}
\tIs the server running on that host and accepting TCP/IP connections?

(Background on this error at: https://sqlalche.me/e/20/e3q8)
''')
sys.exit(1)
"""
KEYERR_PAYLOAD = """\
import sys
sys.stderr.write('''Traceback (most recent call last):
  File "/opt/lsst/ctrl_mpexec/python/lsst/ctrl/mpexec/singleQuantumExecutor.py", line 180, in execute
    result = self._execute(task_node, quantum)
  File "/opt/lsst/pipe_tasks/python/lsst/pipe/tasks/calibrate.py", line 611, in run
    visit = dataId["visit"]
KeyError: 'visit'
''')
sys.exit(1)
"""
# ~HOG_MB of heap touched page by page (the pages become resident), held for a few seconds.
HOG_PAYLOAD = f"""\
import time
heap = bytearray({HOG_MB} * 2**20)
for i in range(0, len(heap), 4096):
    heap[i] = 1
print("holding {HOG_MB} MB", flush=True)
time.sleep(3)
print("done")
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def wait_until(check: Callable[[], bool], *, what: str, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-4000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")
        time.sleep(0.25)


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return str(reply.read().decode())


def get_json(url: str) -> Any:
    return json.loads(get_text(url))


@contextlib.contextmanager
def celery_loops(tmp: Path) -> Iterator[list[Path]]:
    """A worker and a beat running every loop of config/loops.py on the test database."""
    logs = [tmp / "worker.log", tmp / "beat.log"]
    broker_purge()
    worker = worker_start("failures", logs[0])
    beat = beat_start(tmp / "beat-schedule", logs[1])
    try:
        yield logs
    finally:
        process_stop(beat)
        process_stop(worker)


class Fleet:
    """The pilots of the queue, as a batch system runs them: one at a time, a fresh one whenever
    the last exited, each logging to its own file."""

    def __init__(self, server: AiluroServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.token = pilot_token_file(tmp, [QUEUE])
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    @property
    def current(self) -> subprocess.Popen[bytes] | None:
        return self.started[-1][0] if self.started else None

    def keep_one_running(self) -> None:
        if self.current is not None and self.current.poll() is None:
            return
        n = len(self.started)
        log = self.tmp / f"pilot{n}.log"
        argv = pilot_argv(self.server.url, QUEUE, self.token, self.tmp / f"pilot{n}", "--idle-wait", "60")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((proc, log))

    @property
    def logs(self) -> list[Path]:
        return [log for _, log in self.started]

    def stop(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_failures_explain_themselves_and_the_right_ones_are_retried(tmp_path: Path) -> None:
    started = time.monotonic()
    # An operator's edit of the seeded rules: the retry back-offs (60 s and 300 s by default) made
    # short enough for a test; what matches and what is retried stays as seeded.
    RetryRule.objects.filter(name__in=["database-connection-exe", "preempted", "killed-by-signal"]).update(
        params={"backoff_s": 2}
    )
    QueueFactory(name=QUEUE, max_rss_mb=1000)
    markers = tmp_path / "markers"
    markers.mkdir()
    conn = write(tmp_path / "conn.py", CONN_PAYLOAD)
    keyerr = write(tmp_path / "keyerr.py", KEYERR_PAYLOAD)
    hog = write(tmp_path / "hog.py", HOG_PAYLOAD)
    pids = markers / "preempt.pids"
    preempt = (
        f"if [ -e {markers}/preempt.ran ]; then echo resumed after preemption; exit 0; fi\n"
        f"touch {markers}/preempt.ran\n"
        f"echo $$ $PPID > {pids}.tmp && mv {pids}.tmp {pids}\n"
        "echo processing visit 4021; sleep 120\n"
    )
    wf = workflow_submit(
        owner=UserFactory(username="alice"),
        name="failures",
        jobs=[
            NewJob(name="conn", label="ingest", command=f"{PY} {conn} {markers}/conn.ran", memory_mb=100),
            NewJob(name="keyerr", label="calibrate", command=f"{PY} {keyerr}", memory_mb=100),
            NewJob(name="visit", label="coadd", command="echo never", parents=["keyerr"], memory_mb=100),
            NewJob(name="hog", label="measure", command=f"{PY} {hog}", memory_mb=200),
            NewJob(name="preempt", label="forced", command=preempt, memory_mb=100),
        ],
    )
    job = {j.name: j for j in Job.objects.filter(workflow=wf)}

    server = AiluroServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    fleet = Fleet(server, tmp_path)
    preempted_pilot: subprocess.Popen[bytes] | None = None
    try:
        with celery_loops(tmp_path) as loop_logs:
            logs = [*loop_logs, server.tmp / "server.log"]

            def settled() -> bool:
                nonlocal preempted_pilot
                if preempted_pilot is None and pids.exists():
                    # The batch system cancels the job: SIGTERM to every process of it — the
                    # pilot's process group and the payload's session.
                    payload_pid, parent = (int(x) for x in pids.read_text().split())
                    preempted_pilot = fleet.current
                    assert preempted_pilot is not None and parent == preempted_pilot.pid
                    os.killpg(preempted_pilot.pid, signal.SIGTERM)
                    os.killpg(payload_pid, signal.SIGTERM)
                fleet.keep_one_running()
                states = dict(Job.objects.filter(workflow=wf).values_list("name", "jobstatus"))
                return states == {
                    "conn": "finished",
                    "keyerr": "failed",
                    "visit": "pruned",
                    "hog": "finished",
                    "preempt": "finished",
                }

            wait_until(settled, what="every job settled", timeout=180, logs=[*logs, *fleet.logs])
            # The /errors/ page reads the monitor's rollups: a run of its loop that started after
            # the last failure has folded them all.
            last_failure = max(
                a.endtime for a in JobAttempt.objects.filter(job__workflow=wf, jobstatus="failed")
            )
            wait_until(
                lambda: LoopStatus.objects.filter(
                    name="monitor", started_at__gt=last_failure, succeeded_at__isnull=False, error=""
                ).exists(),
                what="a monitor rollup run after the last failure",
                timeout=30,
                logs=logs,
            )
            errors = get_json(f"{server.url}/errors/?json")
            errors_html = get_text(f"{server.url}/errors/")
            conn_html = get_text(f"{server.url}/job/{job['conn'].pk}/")
            pages = {name: get_json(f"{server.url}/job/{j.pk}/?json") for name, j in job.items()}
    finally:
        fleet.stop()
        server.stop()

    attempts = {name: list(JobAttempt.objects.filter(job=j).order_by("attemptnr")) for name, j in job.items()}
    groups = {(g["key"], g["template"]): g for g in errors["errors"]}

    # conn: the exception line of the traceback is the exe diag; the connection rule retried it.
    first, second = attempts["conn"]
    assert (first.jobstatus, first.transexitcode, first.exeerrorcode, first.piloterrorcode) == (
        "failed",
        1,
        1,
        0,
    )
    assert first.exeerrordiag == REFUSED
    assert first.retry_action == "retry"
    assert first.retry_reason == "rule database-connection-exe: transient error"
    assert (second.attemptnr, second.jobstatus) == (2, "finished")
    assert first.endtime is not None and second.starttime is not None
    assert (second.starttime - first.endtime).total_seconds() >= 2  # the rule's back-off
    template = (
        'sqlalchemy.exc.OperationalError: (*) connection to server at "db.example.org" (*), port * failed: '
        "Connection refused"
    )
    assert message_template(REFUSED) == template
    group = groups[("exe:1", template)]
    assert (group["count"], group["example"], group["samples"]) == (1, REFUSED, [job["conn"].pk])
    assert html.escape(template, quote=False) in errors_html or html.escape(template) in errors_html
    assert "rule database-connection-exe: transient error" in conn_html
    page = pages["conn"]
    assert page["job"]["jobstatus"] == "finished" and page["job"]["attemptnr"] == 2
    assert sorted((a["attemptnr"], a["retry_action"], a["retry_reason"]) for a in page["attempts"]) == [
        (1, "retry", "rule database-connection-exe: transient error"),
        (2, "", ""),
    ]
    assert any(
        h["to"] == "defined" and "rule database-connection-exe" in h["cause"] for h in page["status_history"]
    )

    # keyerr: deterministic, failed for good after one attempt; its child pruned.
    [only] = attempts["keyerr"]
    assert (only.jobstatus, only.exeerrorcode, only.exeerrordiag) == ("failed", 1, "KeyError: 'visit'")
    assert (only.retry_action, only.retry_reason) == ("no_retry", "rule payload-error: deterministic error")
    assert (pages["keyerr"]["job"]["jobstatus"], pages["keyerr"]["job"]["attemptnr"]) == ("failed", 1)
    assert groups[("exe:1", "KeyError: 'visit'")]["samples"] == [job["keyerr"].pk]
    assert groups[("trans:1", "")]["count"] == 2  # conn's first attempt and keyerr
    assert pages["visit"]["job"]["jobstatus"] == "pruned"
    assert attempts["visit"] == []
    assert any(
        h["to"] == "pruned" and f"parent {job['keyerr'].pk}" in h["cause"]
        for h in pages["visit"]["status_history"]
    )

    # hog: stopped by the pilot at 1212 with its measured peak; the retry asks at least peak ×
    # margin (1.25), rounded up to 100 MB, and at least the previous request + 500 MB (the defaults):
    # a payload stopped just past its request was measured below its need, and the step covers it.
    oom, fits = attempts["hog"]
    assert (oom.jobstatus, oom.piloterrorcode, oom.request_memory_mb) == ("failed", 1212, 200)
    stopped_at = re.fullmatch(
        r"payload exceeded its memory limit: RSS (\d+) kB > 204800 kB", oom.piloterrordiag
    )
    assert stopped_at, oom.piloterrordiag
    assert oom.max_rss_kb is not None and 200 * 1024 < int(stopped_at[1]) <= oom.max_rss_kb
    assert oom.max_rss_kb < (HOG_MB + 60) * 1024
    measured_mb = math.ceil(oom.max_rss_kb / 1024)
    by_peak = math.ceil(measured_mb * 1.25 / 100) * 100
    asked = max(by_peak, 200 + 500)
    assert asked >= HOG_MB * 1.25
    how = (
        f"measured {measured_mb} MB × 1.25, rounded up to a multiple of 100 MB"
        if by_peak >= 700
        else f"previous 200 MB + 500 MB (measured {measured_mb} MB × 1.25 is less)"
    )
    assert (oom.retry_action, oom.retry_reason) == (
        "increase_memory",
        f"rule oom-pilot: retry asks {asked} MB = {how}; was 200 MB",
    )
    assert (fits.attemptnr, fits.jobstatus, fits.request_memory_mb, fits.queue) == (
        2,
        "finished",
        asked,
        QUEUE,
    )
    assert fits.max_rss_kb is not None and fits.max_rss_kb >= HOG_MB * 1024
    assert pages["hog"]["job"]["request_memory_mb"] == asked
    hog_group = groups[("pilot:1212", "payload exceeded its memory limit: RSS * kB > * kB")]
    assert hog_group["samples"] == [job["hog"].pk]

    # preempt: the batch system's SIGTERM → 1379 from the pilot, retried, finished by a fresh pilot.
    cancelled, resumed = attempts["preempt"]
    assert preempted_pilot is not None and preempted_pilot.returncode == 0
    assert (cancelled.jobstatus, cancelled.piloterrorcode, cancelled.transexitcode) == ("failed", 1379, 143)
    assert (cancelled.retry_action, cancelled.retry_reason) == ("retry", "rule preempted: transient error")
    assert resumed.jobstatus == "finished"
    assert cancelled.pilot_id != resumed.pilot_id
    assert any(key == "pilot:1379" for key, _ in groups)

    assert errors["failed_attempts"] == 4
    assert JobAttempt.objects.filter(job__workflow=wf).count() == 7
    assert Task.objects.filter(workflow=wf).count() == 5
    assert time.monotonic() - started < 240, f"took {time.monotonic() - started:.0f} s"
