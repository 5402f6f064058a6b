"""A small monitored world, built through the dispatcher's services: two regions, three queues,
one workflow of three labels with dependencies, jobs run to finished / failed / running, failed
attempts with errors, payload-log chunks. Every page test reads the same world."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from dispatcher.models import Job, Task, Workflow
from dispatcher.services import NewJob, job_transition, workflow_submit
from tests.factories import (
    FileFactory,
    JobAttemptFactory,
    PayloadLogFactory,
    QueueFactory,
    SiteFactory,
    UserFactory,
    WorkerFactory,
)

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@dataclass
class World:
    workflow: Workflow
    tasks: dict[str, Task]
    jobs: dict[str, Job]
    queues: dict[str, Any]
    user: Any


def pinned(postgresql: int, *, sqlite: int) -> int:
    """A pinned query count on the database the tests run on. The pandamon tests also run on SQLite
    (tests/core/test_embedded_reads.py), where aggregates have no SET/RESET of session settings
    around them and a window is scanned instead of read from the rollups (PostgreSQL only)."""
    return sqlite if connection.vendor == "sqlite" else postgresql


def run_job(pandaid: int, queue: str, *, to: str, node: str = "node01.cern.ch", **errors: Any) -> None:
    """Drive a job through the state machine as the dispatcher would."""
    now = timezone.now()
    job_transition(
        pandaid=pandaid, to="activated", cause="brokered", fields={"queue_id": queue, "pending_parents": 0}
    )
    job_transition(pandaid=pandaid, to="sent", cause="dispatched", fields={"node": node})
    job_transition(
        pandaid=pandaid,
        to="running",
        cause="pilot",
        fields={"starttime": now - timedelta(minutes=30), "node": node},
    )
    if to == "running":
        return
    job_transition(
        pandaid=pandaid,
        to=to,
        cause="pilot final",
        fields={
            "endtime": now,
            "max_rss_kb": 1_500_000,
            "cpu_time_s": 1500.0,
            **errors,
        },
    )


def build_world(*, name: str = "rubin-dp1", job_name_prefix: str = "") -> World:
    user = UserFactory(username="alice")
    cern = SiteFactory(name="CERN", region="EU")
    slac = SiteFactory(name="SLAC", region="US")
    queues = {
        "CERN_Q": QueueFactory(name="CERN_Q", site=cern),
        "CERN_HIMEM": QueueFactory(name="CERN_HIMEM", site=cern),
        "SLAC_Q": QueueFactory(name="SLAC_Q", site=slac),
    }
    WorkerFactory(queue=queues["CERN_Q"], status="running")
    WorkerFactory(queue=queues["SLAC_Q"], status="submitted")
    p = job_name_prefix
    specs = [
        NewJob(name=f"{p}isr_{i}", label="isr", command="echo isr", data_id={"visit": i}) for i in range(6)
    ]
    specs += [
        NewJob(
            name=f"{p}calib_{i}",
            label="calib",
            command="echo calib",
            parents=[f"{p}isr_{i}"],
            data_id={"visit": i},
        )
        for i in range(6)
    ]
    specs += [
        NewJob(
            name=f"{p}coadd", label="coadd", command="echo coadd", parents=[f"{p}calib_{i}" for i in range(6)]
        )
    ]
    wf = workflow_submit(owner=user, name=name, jobs=specs)
    jobs = {j.name.removeprefix(p): j for j in Job.objects.filter(workflow=wf)}
    tasks = {t.label: t for t in Task.objects.filter(workflow=wf)}
    for i in range(4):
        run_job(jobs[f"isr_{i}"].pandaid, "CERN_Q", to="finished")
    run_job(
        jobs["isr_4"].pandaid,
        "SLAC_Q",
        to="failed",
        node="wn7.slac.stanford.edu",
        piloterrorcode=1201,
        piloterrordiag="Lost heartbeat from wn7.slac.stanford.edu after 7200 s",
    )
    run_job(jobs["isr_5"].pandaid, "CERN_HIMEM", to="running")
    for i in range(2):
        run_job(jobs[f"calib_{i}"].pandaid, "CERN_Q", to="running")
    now = timezone.now()
    # The jobs not run yet were submitted two days ago: outside the default 12-hour window.
    Job.objects.filter(workflow=wf, jobstatus="defined").update(statechangetime=now - timedelta(days=2))
    for attempt, diag in (
        (1, "Lost heartbeat from wn3.slac.stanford.edu after 7200 s"),
        (2, "Lost heartbeat from wn7.slac.stanford.edu after 3600 s"),
    ):
        JobAttemptFactory(
            job=jobs["isr_4"],
            attemptnr=attempt,
            queue="SLAC_Q",
            node="wn7.slac.stanford.edu",
            piloterrorcode=1201,
            piloterrordiag=diag,
            endtime=now - timedelta(hours=attempt),
            retry_action="retry",
        )
    JobAttemptFactory(
        job=jobs["isr_3"],
        attemptnr=1,
        queue="CERN_Q",
        exeerrorcode=137,
        exeerrordiag="Payload killed: RSS 4123456 kB above limit in /scratch/job_42/work",
        endtime=now - timedelta(minutes=30),
        retry_action="increase_memory",
    )
    for seq in range(1, 4):
        PayloadLogFactory(
            job=jobs["isr_5"], attemptnr=1, sequence=seq, text=f"processing visit 5 step {seq}\n"
        )
    FileFactory(job=jobs["isr_0"], lfn="raw/visit_0.fits", role="input")
    return World(
        workflow=wf,
        tasks=tasks,
        jobs={k: Job.objects.get(pk=v.pk) for k, v in jobs.items()},
        queues=queues,
        user=user,
    )


@pytest.fixture
def world(db: None) -> World:
    return build_world()


# --- the browser tests (test_browser.py, test_dag_browser.py) ----------------------------------

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright (tests/browser.py), one per module."""
    from tests.browser import chromium

    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    """A page on the live server; any JavaScript error on it fails the test."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture
def live_world(transactional_db: None) -> World:
    return build_world()


def shot(pg: Any, folder: str, name: str) -> None:
    """A full-page screenshot kept as var/artifacts/screenshots/<folder>/<name>.png."""
    (SCREENSHOTS / folder).mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SCREENSHOTS / folder / f"{name}.png"), full_page=True)
