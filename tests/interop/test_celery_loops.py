"""The loops on a real Celery worker and the real Redis broker (docs/architecture.md#loops).

In the DAG tests the pilot side goes through the real v1 pilot protocol views in-process
(acquire_jobs, update_job); in the SIGKILL test the pilot is the real `ailuro pilot` process
talking to a real gunicorn.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Count
from django.test import Client
from django.utils import timezone

from config.celery import app
from core.services import token_create
from dispatcher.models import Job, JobAttempt, JobStatusLog, Task, Workflow
from dispatcher.queries import task_state_counts, workflow_state_counts
from dispatcher.services import NewJob, workflow_submit
from tests.factories import QueueFactory, UserFactory
from tests.interop.celery_procs import (
    ROOT,
    broker_purge,
    child_environment,
    process_stop,
    wait_for,
    worker_start,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("default_retry_rules")]


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        broker_purge()
        proc = worker_start("loops", log)
    try:
        yield log
    finally:
        process_stop(proc)


def _tick(loop: str) -> None:
    app.send_task(f"dispatcher.loop_{loop}")


def _exact(workflow: Workflow) -> dict[str, int]:
    """The workflow's counters, checked against its job rows task by task (the oracle)."""
    task_ids = list(Task.objects.filter(workflow=workflow).values_list("pk", flat=True))
    counters = task_state_counts(task_ids)
    for task_id in task_ids:
        rows = dict(
            Job.objects.filter(task_id=task_id)
            .values("jobstatus")
            .annotate(n=Count("pk"))
            .values_list("jobstatus", "n")
        )
        assert counters[task_id] == rows, f"task {task_id}: counters {counters[task_id]} != rows {rows}"
    return workflow_state_counts(workflow.pk)


def _job(workflow: Workflow, name: str) -> Job:
    return Job.objects.get(workflow=workflow, name=name)


def _wait_status(job: Job, status: str, log: Path, *, attemptnr: int | None = None) -> Job:
    def reached() -> bool:
        job.refresh_from_db()
        return job.jobstatus == status and (attemptnr is None or job.attemptnr == attemptnr)

    wait_for(reached, what=f"job {job.name} {status}", logs=[log])
    return job


def _brokered(job: Job, log: Path) -> Job:
    _tick("brokerage")
    return _wait_status(job, "activated", log)


_PROTOCOL_NAMES = {
    "piloterrorcode": "pilotErrorCode",
    "piloterrordiag": "pilotErrorDiag",
    "transexitcode": "transExitCode",
    "exeerrorcode": "exeErrorCode",
    "exeerrordiag": "exeErrorDiag",
}


def _pilot_run(job: Job, *, errors: dict[str, object] | None = None, peak_rss_kb: int | None = None) -> None:
    """A pilot's whole life through the real v1 protocol views: acquire the job, report starting and
    running, then the final update (finished, or failed with the given errors, and the measured
    peak RSS when given)."""
    token = token_create(username="pilot-fleet", role="pilot")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def call(path: str, body: dict[str, object]) -> dict[str, Any]:
        reply = client.post(f"/api/v1/pilot/{path}", json.dumps(body), content_type="application/json")
        assert reply.status_code == 200, reply.content
        data: dict[str, Any] = reply.json()
        assert data["success"] is True, data
        return data

    job.refresh_from_db()
    [got] = call("acquire_jobs", {"site_name": job.queue_id, "node": "wn01"})["data"]["jobs"]
    assert got["PandaID"] == job.pk
    ident = {"job_id": got["PandaID"], "attempt_nr": got["attemptNr"], "lease": got["lease"]}
    call("update_job", {**ident, "job_status": "starting"})
    call("update_job", {**ident, "job_status": "running", "max_rss": 1000})
    final: dict[str, object] = {_PROTOCOL_NAMES[k]: v for k, v in (errors or {}).items()}
    if peak_rss_kb is not None:
        final["max_rss"] = peak_rss_kb
    call("update_job", {**ident, "job_status": "failed" if errors else "finished", **final})


def _chain(names: list[str], **memory: int) -> Workflow:
    jobs = [
        NewJob(
            name=n,
            label=n,
            command="true",
            parents=[names[i - 1]] if i else [],
            memory_mb=memory.get(n, 2000),
        )
        for i, n in enumerate(names)
    ]
    return workflow_submit(owner=UserFactory(), name="chain", jobs=jobs)


def test_an_out_of_memory_middle_job_is_retried_with_doubled_memory_on_the_bigger_queue(worker: Path) -> None:
    # Disjoint memory ranges, so whatever brokerage ranks by, 8000 MB runs only on MEDIUM and the
    # raised 16000 MB only on HIMEM.
    QueueFactory(name="MEDIUM", max_rss_mb=8000)
    QueueFactory(name="HIMEM", min_rss_mb=8001, max_rss_mb=16000)
    wf = _chain(["a", "b", "c"], b=8000)
    a, b, c = (_job(wf, n) for n in "abc")
    assert _exact(wf) == {"defined": 3}

    assert _brokered(a, worker).queue_id == "MEDIUM"
    assert _exact(wf) == {"activated": 1, "defined": 2}
    _pilot_run(a)
    assert _exact(wf) == {"finished": 1, "defined": 2}

    assert _brokered(b, worker).queue_id == "MEDIUM"
    # The pilot measured a peak of 12800 MB: the retry asks 12800 × 1.25 = 16000 MB.
    _pilot_run(
        b,
        errors={"piloterrorcode": 1212, "piloterrordiag": "payload exceeded memory"},
        peak_rss_kb=12800 * 1024,
    )
    b.refresh_from_db()
    assert (b.jobstatus, b.attemptnr, b.request_memory_mb, b.queue_id) == ("defined", 2, 16000, None)
    assert _exact(wf) == {"finished": 1, "defined": 2}
    assert JobAttempt.objects.get(job=b, attemptnr=1).retry_action == "increase_memory"

    assert _brokered(b, worker).queue_id == "HIMEM"
    assert Job.objects.get(pk=c.pk).jobstatus == "defined"  # the child waits for its parent
    _pilot_run(b)
    assert _exact(wf) == {"finished": 2, "defined": 1}

    assert _brokered(c, worker).queue_id == "MEDIUM"
    _pilot_run(c)
    assert _exact(wf) == {"finished": 3}
    _tick("rollup")
    wait_for(lambda: Workflow.objects.get(pk=wf.pk).status == "done", what="workflow done", logs=[worker])
    assert set(Task.objects.filter(workflow=wf).values_list("status", flat=True)) == {"done"}
    chain = list(
        JobAttempt.objects.filter(job=b)
        .order_by("attemptnr")
        .values_list("queue", "request_memory_mb", "jobstatus")
    )
    assert chain == [("MEDIUM", 8000, "failed"), ("HIMEM", 16000, "finished")]


def test_a_deterministic_failure_is_not_retried_and_its_descendants_are_pruned(worker: Path) -> None:
    QueueFactory(name="MEDIUM", max_rss_mb=8000)
    wf = _chain(["a", "b", "c"])
    other = workflow_submit(
        owner=UserFactory(), name="independent", jobs=[NewJob(name="d", label="d", command="true")]
    )
    a = _job(wf, "a")

    _brokered(a, worker)
    _pilot_run(a, errors={"transexitcode": 1, "exeerrordiag": "ValueError: bad config"})

    a.refresh_from_db()
    assert (a.jobstatus, a.attemptnr) == ("failed", 1)
    assert JobAttempt.objects.get(job=a).retry_reason == "rule payload-error: deterministic error"
    assert _exact(wf) == {"failed": 1, "pruned": 2}
    d = _brokered(_job(other, "d"), worker)
    assert _exact(wf) == {"failed": 1, "pruned": 2}  # brokerage never touches pruned jobs
    _pilot_run(d)
    _tick("rollup")
    wait_for(lambda: Workflow.objects.get(pk=wf.pk).status == "failed", what="workflow failed", logs=[worker])
    assert dict(Task.objects.filter(workflow=wf).values_list("label", "status")) == {
        "a": "failed",
        "b": "failed",
        "c": "failed",
    }
    wait_for(
        lambda: Workflow.objects.get(pk=other.pk).status == "done", what="other workflow done", logs=[worker]
    )


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """gunicorn serving the pilot protocol on a free loopback port, against the test database."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            cwd=ROOT,
            env=child_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(base + "/cache/ddmendpoints.json", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(ready, what="the web server", logs=[log])
        yield base
    finally:
        process_stop(web)


def test_a_job_whose_pilot_is_killed_with_sigkill_is_failed_by_the_watcher_with_100_and_retried(
    worker: Path, web_server: str, tmp_path: Path
) -> None:
    """The real `ailuro pilot` takes the job from a real web server and heartbeats every second
    while its payload sleeps; SIGKILL to the pilot (and its payload: the node is gone) leaves the
    job silent, and the watcher on the Celery worker does the rest."""
    QueueFactory(name="SHORT_HB", max_rss_mb=8000, heartbeat_timeout_s=3)
    token_file = tmp_path / "pilot-token"
    token_file.write_text(token_create(username="pilot-fleet", role="pilot", queues=["SHORT_HB"]))
    payload_pid = tmp_path / "payload.pid"
    wf = workflow_submit(
        owner=UserFactory(),
        name="kill",
        jobs=[
            NewJob(name="x", label="x", command=f"echo $$ > {payload_pid}; exec sleep 120"),
            NewJob(name="y", label="y", command="true"),
        ],
    )
    x, marker = _job(wf, "x"), _job(wf, "y")
    Job.objects.filter(pk=marker.pk).update(retry_after=timezone.now() + timezone.timedelta(hours=1))
    _brokered(x, worker)
    pilot_log = tmp_path / "pilot.log"
    argv = [sys.executable, "-m", "ailuro.cli", "pilot", "--url", web_server, "--queue", "SHORT_HB"]
    argv += ["--token-file", str(token_file), "--workdir", str(tmp_path / "pilot"), "--heartbeat", "1"]
    argv += ["--max-jobs", "1"]
    with pilot_log.open("wb") as out:
        pilot = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    payload: int | None = None
    try:
        wait_for(
            lambda: payload_pid.exists() and Job.objects.get(pk=x.pk).jobstatus == "running",
            what="the pilot runs the payload",
            logs=[pilot_log],
        )
        payload = int(payload_pid.read_text())
        time.sleep(4)  # longer than the queue's timeout: only the heartbeats keep the job alive
        _tick("watcher")
        # Ticks run in order on the one worker process: once the marker job is brokered, the watcher
        # tick before it has run, and it must have left the heartbeating job alone.
        Job.objects.filter(pk=marker.pk).update(retry_after=None)
        _brokered(marker, worker)
        x.refresh_from_db()
        assert (x.jobstatus, x.attemptnr) == ("running", 1)
        assert JobAttempt.objects.filter(job=x).count() == 0
        assert _exact(wf) == {"running": 1, "activated": 1}

        pilot.send_signal(signal.SIGKILL)
        assert pilot.wait(timeout=10) == -signal.SIGKILL
        os.kill(payload, signal.SIGKILL)
        time.sleep(3.5)
        _tick("watcher")
        x = _wait_status(x, "defined", worker, attemptnr=2)
    finally:
        if pilot.poll() is None:
            pilot.kill()
            pilot.wait()
        if payload is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(payload, signal.SIGKILL)

    attempt = JobAttempt.objects.get(job=x, attemptnr=1)
    assert (attempt.jobstatus, attempt.jobdispatchererrorcode, attempt.jobdispatchererrordiag) == (
        "failed",
        100,
        "lost heartbeat: none for 3 s",
    )
    assert (attempt.retry_action, attempt.queue) == ("retry", "SHORT_HB")
    assert x.retry_after is not None and x.queue_id is None and x.lease == ""
    assert _exact(wf) == {"defined": 1, "activated": 1}
    causes = Counter(JobStatusLog.objects.filter(job=x).values_list("previous", "jobstatus"))
    assert causes[("running", "defined")] == 1
