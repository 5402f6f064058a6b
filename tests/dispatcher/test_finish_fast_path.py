"""The one-statement `finished` update (dispatcher/services/pilot_calls/final_update.py) writes
exactly what the generic path (the fence, then `job_attempt_end`) writes: both run on twin worlds
and every row is compared."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, JobDependency, JobStatusLog, Queue, Task
from dispatcher.queries import task_state_counts
from dispatcher.services.pilot_calls import ForeignJob, PilotUpdate, UpdateReply, jobs_pilot_update_bulk
from dispatcher.services.pilot_calls.final_update import job_final_update_generic
from dispatcher.services.pilot_calls.updates import job_update_diagnose
from dispatcher.services.transitions import task_counts_fold
from dispatcher.states import JobStatus
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)

# Columns that differ between twins by construction (identity, names) or by the clock.
_JOB_SKIP = {
    "pandaid",
    "task",
    "workflow",
    "name",
    "label",
    "produsername",
    "creationtime",
    "statechangetime",
    "endtime",
    "starttime",
}
_ATTEMPT_SKIP = {"id", "job", "task", "endtime", "starttime", "walltime_s"}
# A dispatched attempt's columns on the job row, as a pilot's dispatch and first update set them.
DISPATCHED: dict[str, Any] = {
    "lease": "lease-a",
    "starttime": T0,
    "dispatched_at": T0,
    "node": "wn01",
    "pilot_id": "pilot-1",
    "worker_id": 7,
    "request_memory_mb": 1500,
    "request_cores": 2,
    "max_rss_kb": 1000,
}


def _world(queue: Queue, other_queue: Queue, panda_queue: Queue) -> dict[str, Job]:
    """Running jobs in every situation a final update meets, and their children. `queue` requires
    the lease, `panda_queue` (the real PanDA pilot's) does not."""
    task = TaskFactory()

    def running(**kw: Any) -> Job:
        return JobFactory(
            **{"task": task, "jobstatus": JobStatus.RUNNING, "queue": queue, **DISPATCHED, **kw}
        )

    w = {
        "plain": running(),
        "no_start": running(starttime=None, jobstatus=JobStatus.STARTING),
        "sent": running(jobstatus=JobStatus.SENT, starttime=None, node=""),
        "parent_a": running(),
        "parent_b": running(queue=panda_queue),
        "lone_parent": running(),
        "stale": running(attemptnr=2),
        "foreign": running(queue=other_queue),
        "done": JobFactory(task=task, jobstatus=JobStatus.FINISHED, queue=queue, lease="lease-a"),
        "holding": running(jobstatus=JobStatus.HOLDING),
        "unleased": running(),
    }
    # shared: two parents finishing in the same batch; single: released by lone_parent; later:
    # a child with one more parent still to finish.
    w["shared"] = JobFactory(task=task, pending_parents=2)
    w["single"] = JobFactory(task=task, pending_parents=1)
    w["later"] = JobFactory(task=task, pending_parents=2)
    for parent, child in (
        ("parent_a", "shared"),
        ("parent_b", "shared"),
        ("lone_parent", "single"),
        ("parent_a", "later"),
        ("holding", "later"),
    ):
        JobDependency.objects.create(parent=w[parent], child=w[child])
    return w


def _updates(w: dict[str, Job]) -> list[PilotUpdate]:
    def fin(name: str, **kw: Any) -> PilotUpdate:
        job = w[name]
        return PilotUpdate(
            pandaid=job.pandaid, status="finished", attemptnr=1, lease=kw.pop("lease", "lease-a"), **kw
        )

    end = T0 + dt.timedelta(hours=1)
    return [
        fin("plain", endtime=end, metrics={"cpu_time_s": 600.0, "max_rss_kb": 1500000}, node="wn02"),
        fin("no_start", starttime=T0 - dt.timedelta(minutes=5), endtime=end, pilot_id="pilot-2"),
        fin("sent", errors={"exeerrordiag": "warning: " + "x" * 600, "piloterrorcode": 0}, batch_id="b1"),
        fin("parent_a", endtime=end, metrics={"max_pss_kb": 900, "actual_cores": 1.5}),
        fin("parent_b", endtime=end, lease=""),  # no lease echoed, none required: the attempt fences
        fin("lone_parent", endtime=end, errors={"transexitcode": 0}),
        fin("stale", endtime=end),  # attempt 1 reported, the job is at attempt 2
        fin("foreign", endtime=end),
        fin("done", endtime=end),  # duplicate of an ended attempt
        PilotUpdate(pandaid=w["holding"].pandaid, status="finished", attemptnr=1, lease="wrong", endtime=end),
        fin("plain", endtime=end, metrics={"cpu_time_s": 600.0, "max_rss_kb": 1500000}, node="wn02"),
        fin("unleased", endtime=end, lease=""),  # no lease echoed where one is required
    ]


def _row(obj: Model, skip: set[str]) -> dict[str, Any]:
    return {f.name: getattr(obj, f.attname) for f in obj._meta.concrete_fields if f.name not in skip}


def _snapshot(w: dict[str, Job], replies: list[UpdateReply | ForeignJob]) -> dict[str, Any]:
    task_counts_fold()
    out: dict[str, Any] = {
        "replies": [
            ("403", str(r).split(" ", 2)[2]) if isinstance(r, ForeignJob) else (r.command, r.status, r.note)
            for r in replies
        ]
    }
    task_id = w["plain"].task_id
    out["counts"] = task_state_counts([task_id])[task_id]
    for name, job in w.items():
        job.refresh_from_db()
        out[f"job:{name}"] = _row(job, _JOB_SKIP)
        out[f"times:{name}"] = (
            job.starttime is None,
            job.endtime is None,
            job.statechangetime is not None and job.statechangetime > T0 + dt.timedelta(days=1),
        )
        out[f"attempts:{name}"] = [_row(a, _ATTEMPT_SKIP) for a in JobAttempt.objects.filter(job=job)]
        # Each world has its own task: what both paths must write is the attempt's own job's task.
        out[f"attempt_task:{name}"] = [a.task_id == job.task_id for a in JobAttempt.objects.filter(job=job)]
        # The generic path reads the clock twice when the pilot sends no times; the fast path once.
        out[f"walltime:{name}"] = [
            (round(a.walltime_s or 0, 1), a.starttime == job.starttime, a.endtime == job.endtime)
            for a in JobAttempt.objects.filter(job=job)
        ]
        out[f"log:{name}"] = list(
            JobStatusLog.objects.filter(job=job)
            .order_by("id")
            .values_list("attemptnr", "jobstatus", "previous", "cause")
        )
    return out


def test_the_fast_path_writes_what_job_attempt_end_writes() -> None:
    queue = QueueFactory(name="FAST_Q")
    other = QueueFactory(name="OTHER_Q")
    panda = QueueFactory(name="PANDA_Q", pilot_flavour="panda", require_lease=False)
    fast_world, slow_world = _world(queue, other, panda), _world(queue, other, panda)
    queues = frozenset({queue.name, panda.name})

    with CaptureQueriesContext(connection) as queries:
        fast_replies = jobs_pilot_update_bulk(updates=_updates(fast_world), queues=queues)
    slow_replies: list[UpdateReply | ForeignJob] = []
    for update in _updates(slow_world):
        try:
            slow_replies.append(
                job_final_update_generic(update, queues) or job_update_diagnose(update, queues)
            )
        except ForeignJob as exc:
            slow_replies.append(exc)

    fast, slow = _snapshot(fast_world, fast_replies), _snapshot(slow_world, slow_replies)
    for key in slow:
        assert fast[key] == slow[key], key
    # And the comparison compared something: the outcomes the test was written for.
    assert fast["counts"] == {"finished": 7, "running": 3, "defined": 3, "holding": 1}
    assert [fast_world[n].pending_parents for n in ("shared", "single", "later")] == [0, 0, 1]
    assert fast["replies"][6][0] == "tobekilled" and fast["replies"][7][0] == "403"
    assert fast["replies"][10] == (None, "finished", "duplicate update of an ended attempt")
    assert fast["replies"][11] == ("tobekilled", "running", "the lease is not this attempt's")
    assert fast["job:unleased"]["jobstatus"] == "running" and fast["attempts:unleased"] == []
    assert len(fast["job:sent"]["exeerrordiag"]) == 500
    assert fast["attempts:plain"][0]["lease"] == ""  # only a failed attempt keeps its lease
    assert fast["attempt_task:plain"] == [True]
    # One statement for the six finished jobs, one diagnosis read per update it did not fence in.
    finishes = [q for q in queries if "dispatcher_jobattempt" in q["sql"]]
    assert len(finishes) == 1


def test_a_single_finished_update_releases_children_and_counts(django_assert_num_queries: Any) -> None:
    queue = QueueFactory()
    task: Task = TaskFactory()
    parent = JobFactory(
        task=task, jobstatus=JobStatus.RUNNING, queue=queue, lease="l", starttime=timezone.now()
    )
    child = JobFactory(task=task, pending_parents=1)
    JobDependency.objects.create(parent=parent, child=child)
    update = PilotUpdate(pandaid=parent.pandaid, status="finished", attemptnr=1, lease="l")

    with django_assert_num_queries(1):
        [reply] = jobs_pilot_update_bulk(updates=[update], queues=None)

    assert isinstance(reply, UpdateReply) and reply.status == "finished"
    child.refresh_from_db()
    assert child.pending_parents == 0
    task_counts_fold()
    assert task_state_counts([task.pk])[task.pk] == {"finished": 1, "defined": 1}


def test_the_hot_statements_fit_psycopg_parse_cache() -> None:
    from psycopg import _queries

    from dispatcher.services.pilot_calls.dispatch import DISPATCH_SQL
    from dispatcher.services.pilot_calls.final_update import FINISH_SQL
    from dispatcher.services.pilot_calls.heartbeat import HEARTBEAT_MANY_SQL, HEARTBEAT_ONE_SQL

    # Longer statements are re-parsed by psycopg on every call (~0.3 ms of the final update).
    assert _queries.MAX_CACHED_STATEMENT_LENGTH == 4096
    for sql in (DISPATCH_SQL, HEARTBEAT_ONE_SQL, HEARTBEAT_MANY_SQL, FINISH_SQL):
        assert len(sql.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH, sql[:80]
