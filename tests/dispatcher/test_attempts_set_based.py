"""`jobs_attempt_fail` (the watcher's set-based end of attempts) writes exactly what
`job_attempt_end` writes for each job: both run on twin worlds and every row is compared."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from dispatcher.models import Job, JobAttempt, JobDependency, JobStatusLog, Queue
from dispatcher.queries import task_state_counts
from dispatcher.services.attempts import job_attempt_end, jobs_attempt_fail
from dispatcher.services.transitions import task_counts_fold
from dispatcher.states import JobStatus
from tests.dispatcher.test_finish_fast_path import DISPATCHED, _row
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_retry_rules")]

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
END = T0 + dt.timedelta(hours=3)
ERRORS = {"jobdispatchererrorcode": 100, "jobdispatchererrordiag": "lost heartbeat: none for 7200 s"}
CAUSE = "watcher: lost heartbeat: none for 7200 s"

_JOB_SKIP = {
    "pandaid",
    "task",
    "workflow",
    "name",
    "label",
    "produsername",
    "creationtime",
    "statechangetime",
    "retry_after",
}
_ATTEMPT_SKIP = {"id", "job", "task"}


def _world(queue: Queue) -> dict[str, Job]:
    """In-flight jobs in every situation the watcher meets, and the children of two of them."""
    task, one_shot = TaskFactory(max_attempts=3), TaskFactory(max_attempts=1)

    def in_flight(status: str = JobStatus.RUNNING, **kw: Any) -> Job:
        return JobFactory(
            **{"task": task, "jobstatus": status, "queue": queue, **DISPATCHED, "cpu_time_s": 60.0, **kw}
        )

    w = {
        "retried": in_flight(),
        "second": in_flight(attemptnr=2),
        "sent": in_flight(JobStatus.SENT, starttime=None, node=""),
        "starting": in_flight(JobStatus.STARTING, starttime=None),
        "last": in_flight(attemptnr=3),
        "last_parent": in_flight(attemptnr=3),
        "one_shot": in_flight(task=one_shot),
        "one_shot_parent": in_flight(task=one_shot),
        "holding": in_flight(JobStatus.HOLDING),
    }
    w["child"] = JobFactory(task=task, pending_parents=1)
    w["grandchild"] = JobFactory(task=task, pending_parents=1)
    w["other_child"] = JobFactory(task=one_shot, pending_parents=1)
    for parent, child in (
        ("last_parent", "child"),
        ("child", "grandchild"),
        ("one_shot_parent", "other_child"),
    ):
        JobDependency.objects.create(parent=w[parent], child=w[child])
    return w


def _snapshot(w: dict[str, Job]) -> dict[str, Any]:
    task_counts_fold()
    names = {job.pandaid: name for name, job in w.items()}
    tasks = [w["retried"].task_id, w["one_shot"].task_id]
    counts = task_state_counts(tasks)
    out: dict[str, Any] = {"counts": [counts[t] for t in tasks]}
    for name, job in w.items():
        job.refresh_from_db()
        out[f"job:{name}"] = _row(job, _JOB_SKIP)
        out[f"retry_after:{name}"] = job.retry_after is not None  # the clock + the rule's backoff
        out[f"attempts:{name}"] = [_row(a, _ATTEMPT_SKIP) for a in JobAttempt.objects.filter(job=job)]
        out[f"log:{name}"] = [
            (n, status, previous, re.sub(r"parent (\d+)", lambda m: f"parent {names[int(m[1])]}", cause))
            for n, status, previous, cause in JobStatusLog.objects.filter(job=job)
            .order_by("id")
            .values_list("attemptnr", "jobstatus", "previous", "cause")
        ]
    return out


def test_the_set_based_end_writes_what_job_attempt_end_writes() -> None:
    queue = QueueFactory(name="DARK_Q")
    one_by_one, set_based = _world(queue), _world(queue)
    in_flight = (
        "retried",
        "second",
        "sent",
        "starting",
        "last",
        "last_parent",
        "one_shot",
        "one_shot_parent",
    )
    in_flight += ("holding",)

    for name in in_flight:
        job = one_by_one[name]
        job_attempt_end(
            pandaid=job.pandaid,
            attemptnr=job.attemptnr,
            status="failed",
            cause=CAUSE,
            errors=ERRORS,
            endtime=END,
        )
    locked = list(Job.objects.filter(pk__in=[set_based[n].pk for n in in_flight]).select_for_update())
    outcomes = jobs_attempt_fail(locked, cause=CAUSE, errors=ERRORS, endtime=END)

    a, b = _snapshot(one_by_one), _snapshot(set_based)
    for key in a:
        assert b[key] == a[key], key
    # And the comparison compared something: the outcomes the test was written for.
    assert {o.pandaid: (o.status, o.pruned) for o in outcomes} == {
        set_based[n].pandaid: outcome
        for n, outcome in {
            "retried": ("defined", 0),
            "second": ("defined", 0),
            "sent": ("defined", 0),
            "starting": ("defined", 0),
            "last": ("failed", 0),
            "last_parent": ("failed", 2),
            "one_shot": ("failed", 0),
            "one_shot_parent": ("failed", 1),
            "holding": ("defined", 0),
        }.items()
    }
    assert b["job:retried"]["attemptnr"] == 2 and b["retry_after:retried"]
    assert b["job:grandchild"]["jobstatus"] == "pruned"
    assert b["attempts:last"][0]["retry_action"] == "no_retry"
    assert b["attempts:retried"][0]["lease"] == "lease-a"  # a failed attempt keeps its lease
    assert b["log:child"][-1][3] == "parent last_parent failed for good"


def test_nothing_is_written_when_a_job_changed_since_it_was_read() -> None:
    """The caller passes rows it locked; one read without the lock and ended meanwhile (a caller's
    mistake) rolls the lot back."""
    queue = QueueFactory()
    running = JobFactory(jobstatus=JobStatus.RUNNING, queue=queue)
    ended = JobFactory(jobstatus=JobStatus.RUNNING, queue=queue)
    Job.objects.filter(pk=ended.pk).update(jobstatus=JobStatus.FINISHED)

    with pytest.raises(RuntimeError, match="1 of 2 locked jobs did not move"):
        jobs_attempt_fail([running, ended], cause=CAUSE, errors=ERRORS, endtime=END)

    assert not JobAttempt.objects.filter(job__in=[running, ended]).exists()
    assert Job.objects.get(pk=running.pk).jobstatus == "running"
