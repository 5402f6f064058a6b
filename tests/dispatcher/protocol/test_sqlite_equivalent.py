"""The embedded run's SQLite path of dispatch, heartbeat, final update and submission (the suite
itself runs on PostgreSQL): a subprocess migrates a fresh SQLite database and drives the same
services through it; a bulk update and a submission run on both databases must give the same
replies and the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
assert connection.vendor == "sqlite"
from dispatcher.models import Job, JobAttempt, JobStatusLog, Queue, Site
from dispatcher.queries import task_state_counts
from dispatcher.services import DispatchRequest, PilotUpdate, job_pilot_update, jobs_dispatch, job_transition
from tests.factories import JobFactory, TaskFactory

queue = Queue.objects.create(name="Q", site=Site.objects.create(name="S"))
task = TaskFactory()
low = JobFactory(task=task, jobstatus="activated", queue=queue, currentpriority=1)
high = JobFactory(task=task, jobstatus="activated", queue=queue, currentpriority=9)
big = JobFactory(task=task, jobstatus="activated", queue=queue, request_memory_mb=9000)

got = jobs_dispatch(request=DispatchRequest(queue="Q", n_jobs=5, memory_mb=4000, node="wn"))
assert [j["pandaid"] for j in got] == [high.pk, low.pk], got
assert len({j["lease"] for j in got}) == 2 and all(len(j["lease"]) == 32 for j in got)
assert jobs_dispatch(request=DispatchRequest(queue="Q", memory_mb=4000)) == []
assert Job.objects.get(pk=big.pk).jobstatus == "activated"

first = got[0]
def update(status, **kw):
    kw.setdefault("attemptnr", first["attemptnr"])
    kw.setdefault("lease", first["lease"])
    return job_pilot_update(update=PilotUpdate(pandaid=first["pandaid"], status=status, **kw), queues=None)

assert update("running").status == "running"
assert update("starting").status == "running"  # never backwards
assert update("running", attemptnr=5).command == "tobekilled"
assert update("running", lease="x" * 32).command == "tobekilled"
unleased = {f.attname: getattr(Job.objects.get(pk=first["pandaid"]), f.attname) for f in Job._meta.concrete_fields}
assert update("running", lease="").command == "tobekilled"  # the queue requires the lease
assert update("finished", lease="").command == "tobekilled"
assert {f.attname: getattr(Job.objects.get(pk=first["pandaid"]), f.attname) for f in Job._meta.concrete_fields} == unleased
assert update("finished").status == "finished"
assert update("finished").command is None  # duplicate
assert JobAttempt.objects.filter(job_id=first["pandaid"]).count() == 1
history = list(JobStatusLog.objects.filter(job_id=first["pandaid"]).values_list("jobstatus", flat=True))
assert history == ["sent", "running", "finished"], history
job_transition(pandaid=got[1]["pandaid"], to="cancelled", cause="operator")
killed = job_pilot_update(
    update=PilotUpdate(pandaid=got[1]["pandaid"], status="running", attemptnr=1), queues=None
)
assert killed.command == "tobekilled"
assert task_state_counts([task.pk])[task.pk] == {"finished": 1, "cancelled": 1, "activated": 1}
print("SQLITE-OK")

from tests.dispatcher.protocol.test_sqlite_equivalent import bulk_scenario
print("BULK " + json.dumps(bulk_scenario()))
from tests.dispatcher.protocol.test_sqlite_equivalent import submission_scenario
print("SUBMIT " + json.dumps(submission_scenario(), default=str))
from tests.dispatcher.protocol.test_sqlite_equivalent import late_report_scenario
print("LATE " + json.dumps(late_report_scenario()))
"""


def bulk_scenario() -> dict[str, Any]:
    """Dispatch, then one update_jobs_bulk mixing heartbeats (one job twice: its last update
    counts), a finished job reported twice, a failed attempt, a stale lease, an unknown job and
    updates without the lease the queue requires;
    returns what a pilot and the monitor would see, with pandaids replaced by their rank."""
    from dispatcher.models import Job, JobAttempt, JobStatusLog, Queue, Site
    from dispatcher.queries import task_state_counts
    from dispatcher.services.pilot_calls import (
        DispatchRequest,
        PilotUpdate,
        jobs_dispatch,
        jobs_pilot_update_bulk,
    )
    from dispatcher.services.transitions import task_counts_fold
    from tests.factories import JobFactory, TaskFactory

    queue = Queue.objects.create(name="BULK_Q", site=Site.objects.create(name="BULK_S"))
    task = TaskFactory(max_attempts=3)
    for priority in range(6):
        JobFactory(task=task, jobstatus="activated", queue=queue, currentpriority=priority)
    got = jobs_dispatch(request=DispatchRequest(queue="BULK_Q", n_jobs=5, node="wn"))
    a, b, c, d, e = got
    order = {job["pandaid"]: n for n, job in enumerate(got)}

    def up(job: dict[str, Any], status: str, **kw: Any) -> PilotUpdate:
        kw.setdefault("lease", job["lease"])
        return PilotUpdate(pandaid=job["pandaid"], status=status, attemptnr=job["attemptnr"], **kw)

    replies = jobs_pilot_update_bulk(
        updates=[
            up(a, "running", metrics={"max_rss_kb": 10}),
            up(a, "starting", node="wn2"),
            up(b, "holding"),
            up(c, "finished", errors={"transexitcode": 0}),
            up(c, "finished"),
            up(d, "failed", errors={"piloterrorcode": 1099}),  # not retried
            up(e, "running", lease="x" * 32),
            PilotUpdate(pandaid=-1, status="running", attemptnr=1),
            up(b, "finished", lease=""),  # BULK_Q requires the lease
            up(b, "failed", lease=""),
            up(e, "running", lease=""),
        ],
        queues=None,
    )
    task_counts_fold()
    jobs = Job.objects.filter(pk__in=order).order_by("pandaid")
    return {
        "replies": [(r.command, r.status, r.note) for r in replies],  # type: ignore[union-attr]
        "jobs": [
            (order[j.pandaid], j.jobstatus, j.attemptnr, j.node, j.max_rss_kb, j.starttime is None)
            for j in jobs
        ],
        "attempts": sorted(
            (order[job_id], n, status, code)
            for job_id, n, status, code in JobAttempt.objects.filter(job_id__in=order).values_list(
                "job_id", "attemptnr", "jobstatus", "piloterrorcode"
            )
        ),
        "log": sorted(
            (order[job_id], n, status, previous, cause)
            for job_id, n, status, previous, cause in JobStatusLog.objects.filter(
                job_id__in=order
            ).values_list("job_id", "attemptnr", "jobstatus", "previous", "cause")
        ),
        "counts": task_state_counts([task.pk])[task.pk],
    }


@pytest.mark.django_db
def test_a_bulk_update_means_the_same_on_postgresql_and_sqlite(on_sqlite: dict[str, Any]) -> None:
    sqlite = on_sqlite["bulk"]
    postgresql = json.loads(json.dumps(bulk_scenario()))

    assert postgresql == sqlite
    # And the comparison compared something: the outcomes the scenario was written for.
    assert postgresql["counts"] == {
        "starting": 1,
        "holding": 1,
        "finished": 1,
        "failed": 1,
        "sent": 1,
        "activated": 1,
    }
    assert [r[1] for r in postgresql["replies"]] == [
        "starting", "starting", "holding", "finished", "finished", "failed", "sent", "",
        "holding", "holding", "sent",
    ]  # fmt: skip
    assert postgresql["replies"][4][2] == "duplicate update of an ended attempt"
    assert postgresql["replies"][6][0] == postgresql["replies"][7][0] == "tobekilled"
    assert {r[0] for r in postgresql["replies"][8:]} == {"tobekilled"}


def submission_scenario() -> dict[str, Any]:
    """Submit a small DAG whose text needs escaping in COPY's format; returns its job rows (every
    column but identities and clocks) and edges by job name."""
    from django.contrib.auth.models import User

    from dispatcher.models import Job, JobDependency
    from dispatcher.services import NewJob, workflow_submit

    nodes = [
        NewJob("a", "x", "echo 'tab\there' \\ back\nslash", environment={"K": "v 1\t2"}),
        NewJob("b", "y", "true", parents=["a"], priority=7, data_id={"visit": 1003, "band": "r"}),
        NewJob("c", "y", "true", parents=["a", "b"], container_image="img:1", memory_mb=4000, cores=4),
    ]
    workflow = workflow_submit(
        owner=User.objects.create_user("alice"), name="twin", jobs=nodes, check_queues=False
    )
    jobs = list(Job.objects.filter(workflow=workflow).order_by("name"))
    skip = {"pandaid", "task", "workflow", "creationtime", "statechangetime"}
    names = {job.pandaid: job.name for job in jobs}
    return {
        "jobs": [
            {f.name: getattr(job, f.attname) for f in Job._meta.concrete_fields if f.name not in skip}
            | {
                "task_label": job.task.label,
                "stamped": job.creationtime is not None and job.statechangetime is not None,
            }
            for job in jobs
        ],
        "edges": sorted(
            (names[parent], names[child])
            for parent, child in JobDependency.objects.filter(child__workflow=workflow).values_list(
                "parent_id", "child_id"
            )
        ),
    }


@pytest.mark.django_db
def test_a_submission_writes_the_same_rows_on_postgresql_and_sqlite(on_sqlite: dict[str, Any]) -> None:
    sqlite = on_sqlite["submit"]
    postgresql = json.loads(json.dumps(submission_scenario(), default=str))

    assert postgresql == sqlite
    assert postgresql["edges"] == [["a", "b"], ["a", "c"], ["b", "c"]]
    a, b, c = postgresql["jobs"]
    assert a["command"] == "echo 'tab\there' \\ back\nslash" and a["environment"] == {"K": "v 1\t2"}
    assert (b["currentpriority"], b["data_id"], c["pending_parents"], c["container_image"]) == (
        7,
        {"visit": 1003, "band": "r"},
        2,
        "img:1",
    )
    assert all(job["jobstatus"] == "defined" and job["stamped"] for job in postgresql["jobs"])


def late_report_scenario() -> dict[str, Any]:
    """Three attempts the watcher failed for a lost heartbeat, then their late `finished` reports
    in one bulk: one job waits for its retry, one failed for good (its descendants pruned), one
    was dispatched again; returns replies, rows, attempts, logs and counts by job rank."""
    import datetime as dt

    from django.db.models import Q

    from dispatcher.models import Job, JobAttempt, JobDependency, JobStatusLog, Queue, Site
    from dispatcher.queries import task_state_counts
    from dispatcher.services.pilot_calls import (
        DispatchRequest,
        PilotUpdate,
        jobs_dispatch,
        jobs_pilot_update_bulk,
    )
    from dispatcher.services.transitions import job_transition, task_counts_fold
    from dispatcher.services.watcher import EC_LOST_HEARTBEAT, jobs_fail_silent
    from tests.factories import JobFactory, TaskFactory

    queue = Queue.objects.create(name="LATE_Q", site=Site.objects.create(name="LATE_S"))
    start = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    retried, final = TaskFactory(max_attempts=3), TaskFactory(max_attempts=1)
    leases = ["a" * 32, "b" * 32, "c" * 32]
    jobs = [
        JobFactory(task=task, jobstatus="running", queue=queue, lease=lease, starttime=start, node="wn")
        for task, lease in zip((retried, final, retried), leases, strict=True)
    ]
    child, grandchild = JobFactory(task=final, pending_parents=1), JobFactory(task=final, pending_parents=1)
    JobDependency.objects.create(parent=jobs[1], child=child)
    JobDependency.objects.create(parent=child, child=grandchild)
    assert (
        jobs_fail_silent(
            silence=Q(pandaid__in=[job.pandaid for job in jobs]),
            code=EC_LOST_HEARTBEAT,
            diag="lost heartbeat: none for 600 s",
            now=start + dt.timedelta(hours=1),
            limit=10,
        )
        == 3
    )
    job_transition(pandaid=jobs[2].pandaid, to="activated", cause="brokered", fields={"queue_id": "LATE_Q"})
    assert [j["pandaid"] for j in jobs_dispatch(request=DispatchRequest(queue="LATE_Q"))] == [jobs[2].pandaid]
    replies = jobs_pilot_update_bulk(
        updates=[
            PilotUpdate(
                pandaid=job.pandaid, status="finished", attemptnr=1, lease=lease, metrics={"cpu_time_s": 9.0}
            )
            for job, lease in zip(jobs, leases, strict=True)
        ],
        queues=None,
    )
    task_counts_fold()
    rank = {job.pandaid: n for n, job in enumerate([*jobs, child, grandchild])}
    return {
        "replies": [(r.command, r.status, r.note) for r in replies],  # type: ignore[union-attr]
        "jobs": sorted(
            (rank[p], *rest)
            for p, *rest in Job.objects.filter(pk__in=rank).values_list(
                "pandaid", "jobstatus", "attemptnr", "pending_parents", "jobdispatchererrorcode", "cpu_time_s"
            )
        ),
        "attempts": sorted(
            (rank[p], *rest)
            for p, *rest in JobAttempt.objects.filter(job_id__in=rank).values_list(
                "job_id", "attemptnr", "jobstatus", "jobdispatchererrorcode", "cpu_time_s", "retry_action"
            )
        ),
        "log": sorted(
            (rank[p], n, status, previous, cause.replace(f"parent {jobs[1].pandaid} ", "parent #1 "))
            for p, n, status, previous, cause in JobStatusLog.objects.filter(job_id__in=rank).values_list(
                "job_id", "attemptnr", "jobstatus", "previous", "cause"
            )
        ),
        "counts": [task_state_counts([t.pk])[t.pk] for t in (retried, final)],
    }


@pytest.mark.django_db
def test_a_late_report_is_reconciled_the_same_on_postgresql_and_sqlite(on_sqlite: dict[str, Any]) -> None:
    sqlite = on_sqlite["late"]
    postgresql = json.loads(json.dumps(late_report_scenario()))

    assert postgresql == sqlite
    # And the comparison compared something: two reconciled, the one dispatched again refused.
    assert [r[:2] for r in postgresql["replies"]] == [
        [None, "finished"],
        [None, "finished"],
        ["tobekilled", "sent"],
    ]
    assert postgresql["counts"] == [{"finished": 1, "sent": 1}, {"finished": 1, "defined": 2}]
    assert [j[3] for j in postgresql["jobs"][3:]] == [0, 1]  # the child released, the grandchild waits


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The script run once on a fresh SQLite database: its checks pass, and the scenarios' results."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "AILURO_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AILURO_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "SQLITE-OK" in result.stdout
    [bulk] = [line[5:] for line in result.stdout.splitlines() if line.startswith("BULK ")]
    [submit] = [line[7:] for line in result.stdout.splitlines() if line.startswith("SUBMIT ")]
    [late] = [line[5:] for line in result.stdout.splitlines() if line.startswith("LATE ")]
    return {"bulk": json.loads(bulk), "submit": json.loads(submit), "late": json.loads(late)}


def test_dispatch_and_updates_behave_the_same_on_sqlite(on_sqlite: dict[str, Any]) -> None:
    assert on_sqlite["bulk"]["replies"] and on_sqlite["submit"]["jobs"]
