"""A `finished` report that arrives after the watcher failed its attempt for a lost heartbeat is
reconciled while no later attempt has started, and refused once one has."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from dispatcher.loops import rollup_one_batch, watcher_one_batch
from dispatcher.models import Job, JobAttempt, JobDependency, JobStatusLog, Queue, Task
from dispatcher.queries import task_state_counts
from dispatcher.services.pilot_calls import (
    DispatchRequest,
    PilotUpdate,
    UpdateReply,
    jobs_dispatch,
    jobs_pilot_update_bulk,
)
from dispatcher.services.transitions import job_transition, task_counts_fold, task_counts_recompute
from dispatcher.states import JobStatus
from pandamon import rollups
from pandamon.models import ErrorSummary, JobSummary
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = pytest.mark.django_db

LEASE = "a" * 32


def _world(max_attempts: int, queue: Queue | None = None) -> dict[str, Job]:
    """A running parent at attempt 1 whose heartbeat stopped, a child and a grandchild."""
    queue = queue or QueueFactory(name="LATE_Q")
    task: Task = TaskFactory(max_attempts=max_attempts)
    start = timezone.now() - dt.timedelta(hours=2)
    parent = JobFactory(
        task=task,
        jobstatus=JobStatus.RUNNING,
        queue=queue,
        lease=LEASE,
        node="wn01",
        pilot_id="pilot-1",
        worker_id=7,
        starttime=start,
        dispatched_at=start,
        heartbeat_at=start,
        statechangetime=start,
    )
    child = JobFactory(task=task, pending_parents=1)
    grandchild = JobFactory(task=task, pending_parents=1)
    JobDependency.objects.create(parent=parent, child=child)
    JobDependency.objects.create(parent=child, child=grandchild)
    assert watcher_one_batch(now=timezone.now() + dt.timedelta(days=1)) == 1
    return {"parent": parent, "child": child, "grandchild": grandchild}


def _report(job: Job, *, lease: str = LEASE, attemptnr: int = 1) -> UpdateReply:
    update = PilotUpdate(
        pandaid=job.pandaid,
        status="finished",
        attemptnr=attemptnr,
        lease=lease,
        endtime=timezone.now() - dt.timedelta(minutes=1),
        metrics={"cpu_time_s": 42.0, "max_rss_kb": 1234},
        errors={"transexitcode": 0},
    )
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=frozenset({"LATE_Q"}))
    assert isinstance(reply, UpdateReply)
    return reply


def _rows(w: dict[str, Job]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, job in w.items():
        row = Job.objects.get(pk=job.pk)
        out[name] = {f.attname: getattr(row, f.attname) for f in Job._meta.concrete_fields}
        out[f"{name}:attempts"] = list(JobAttempt.objects.filter(job_id=job.pk).order_by("id").values())
        out[f"{name}:log"] = list(JobStatusLog.objects.filter(job_id=job.pk).order_by("id").values())
    return out


def _assert_counters_and_feed_exact(task_id: int) -> None:
    task_counts_fold()
    assert task_state_counts([task_id])[task_id] == {
        k: v for k, v in task_counts_recompute(task_id=task_id).items() if v
    }
    while rollups.rollups_fold():
        pass
    folded = (
        set(
            JobSummary.objects.filter(count__gt=0).values_list(
                "bucket", "jobstatus", "facet", "value", "count"
            )
        ),
        set(
            ErrorSummary.objects.filter(count__gt=0).values_list(
                "bucket", "family", "code", "template", "count"
            )
        ),
    )
    rollups.rollups_rebuild()
    rebuilt = (
        set(
            JobSummary.objects.filter(count__gt=0).values_list(
                "bucket", "jobstatus", "facet", "value", "count"
            )
        ),
        set(
            ErrorSummary.objects.filter(count__gt=0).values_list(
                "bucket", "family", "code", "template", "count"
            )
        ),
    )
    assert rebuilt == folded


def _assert_reconciled(w: dict[str, Job]) -> None:
    parent = Job.objects.get(pk=w["parent"].pk)
    assert (parent.jobstatus, parent.attemptnr, parent.lease, parent.queue_id) == (
        "finished",
        1,
        LEASE,
        "LATE_Q",
    )
    assert (parent.jobdispatchererrorcode, parent.jobdispatchererrordiag, parent.retry_after) == (0, "", None)
    assert (parent.cpu_time_s, parent.max_rss_kb, parent.node, parent.worker_id) == (42.0, 1234, "wn01", 7)
    [attempt] = JobAttempt.objects.filter(job=parent)
    assert (attempt.attemptnr, attempt.jobstatus, attempt.jobdispatchererrorcode) == (1, "finished", 0)
    assert (attempt.retry_action, attempt.cpu_time_s, attempt.max_rss_kb, attempt.lease) == (
        "",
        42.0,
        1234,
        "",
    )
    assert attempt.endtime == parent.endtime and attempt.walltime_s and attempt.walltime_s > 3000
    last = JobStatusLog.objects.filter(job=parent).order_by("id").last()
    assert last is not None and (last.jobstatus, last.attemptnr) == ("finished", 1)
    assert "reconciled from a late report" in last.cause
    assert JobStatusLog.objects.filter(job=parent, jobstatus="finished").count() == 1
    child = Job.objects.get(pk=w["child"].pk)
    assert (child.jobstatus, child.pending_parents) == ("defined", 0)
    grandchild = Job.objects.get(pk=w["grandchild"].pk)
    assert (grandchild.jobstatus, grandchild.pending_parents) == ("defined", 1)
    _assert_counters_and_feed_exact(parent.task_id)


def test_a_late_report_finishes_a_job_waiting_for_its_retry() -> None:
    w = _world(max_attempts=3)
    parent = Job.objects.get(pk=w["parent"].pk)
    assert (parent.jobstatus, parent.attemptnr, parent.lease) == ("defined", 2, "")

    reply = _report(w["parent"])

    assert (reply.command, reply.status) == (None, "finished")
    _assert_reconciled(w)
    # The same report again is a duplicate of an ended attempt: nothing more is released.
    again = _report(w["parent"])
    assert (again.command, again.status) == (None, "finished")
    assert Job.objects.get(pk=w["child"].pk).pending_parents == 0
    assert JobStatusLog.objects.filter(job=w["parent"], jobstatus="finished").count() == 1


def test_a_late_report_finishes_a_job_activated_but_not_dispatched() -> None:
    w = _world(max_attempts=3)
    QueueFactory(name="OTHER_Q")
    job_transition(pandaid=w["parent"].pk, to="activated", cause="brokered", fields={"queue_id": "OTHER_Q"})

    reply = _report(w["parent"])

    assert (reply.command, reply.status) == (None, "finished")
    _assert_reconciled(w)


def test_a_late_report_finishes_a_job_failed_for_good_and_brings_back_its_pruned_descendants() -> None:
    w = _world(max_attempts=1)
    assert Job.objects.get(pk=w["parent"].pk).jobstatus == "failed"
    assert {Job.objects.get(pk=w[n].pk).jobstatus for n in ("child", "grandchild")} == {"pruned"}

    reply = _report(w["parent"])

    assert (reply.command, reply.status) == (None, "finished")
    _assert_reconciled(w)


def test_a_late_report_is_refused_once_a_later_attempt_started() -> None:
    w = _world(max_attempts=3)
    job_transition(pandaid=w["parent"].pk, to="activated", cause="brokered", fields={"queue_id": "LATE_Q"})
    [sent] = jobs_dispatch(request=DispatchRequest(queue="LATE_Q"))
    assert (sent["pandaid"], sent["attemptnr"]) == (w["parent"].pk, 2)
    before = _rows(w)

    reply = _report(w["parent"])

    assert reply.command == "tobekilled"
    assert _rows(w) == before


@pytest.mark.parametrize("lease", ["", "b" * 32])
def test_a_late_report_without_the_attempts_lease_is_refused(lease: str) -> None:
    w = _world(max_attempts=3)
    before = _rows(w)

    reply = _report(w["parent"], lease=lease)

    assert reply.command == "tobekilled"
    assert _rows(w) == before


def test_a_late_report_without_lease_is_reconciled_where_the_queue_does_not_require_it() -> None:
    w = _world(max_attempts=3, queue=QueueFactory(name="LATE_Q", pilot_flavour="panda", require_lease=False))

    reply = _report(w["parent"], lease="")

    assert (reply.command, reply.status) == (None, "finished")
    _assert_reconciled(w)


def test_a_report_after_an_attempt_the_pilot_failed_itself_is_refused() -> None:
    queue = QueueFactory(name="LATE_Q")
    task = TaskFactory(max_attempts=3)
    job = JobFactory(
        task=task, jobstatus=JobStatus.RUNNING, queue=queue, lease=LEASE, starttime=timezone.now()
    )
    failed = PilotUpdate(pandaid=job.pandaid, status="failed", attemptnr=1, lease=LEASE)
    jobs_pilot_update_bulk(updates=[failed], queues=None)
    before = _rows({"job": job})

    reply = _report(job)

    assert (reply.status, reply.note) == ("failed", "duplicate update of an ended attempt")
    assert _rows({"job": job}) == before


def test_a_task_the_rollup_ended_failed_is_done_after_the_late_report() -> None:
    queue = QueueFactory(name="LATE_Q")
    task: Task = TaskFactory(max_attempts=1)
    start = timezone.now() - dt.timedelta(hours=2)
    job = JobFactory(
        task=task, jobstatus=JobStatus.RUNNING, queue=queue, lease=LEASE, starttime=start, heartbeat_at=start
    )
    watcher_one_batch(now=timezone.now() + dt.timedelta(days=1))
    rollup_one_batch()
    task.refresh_from_db()
    assert task.status == "failed" and task.workflow.status == "failed"

    assert _report(job).status == "finished"
    rollup_one_batch()

    task.refresh_from_db()
    assert (task.status, task.workflow.status) == ("done", "done")


@pytest.mark.parametrize("api", ["legacy", "v1-bulk"])
def test_a_late_report_through_the_protocol(api: str) -> None:
    from core.services import token_create
    from tests.dispatcher.protocol.conftest import Pilot

    w = _world(max_attempts=3)
    pilot = Pilot(token_create(username="fleet", role="pilot", queues=["LATE_Q"]))
    pandaid = w["parent"].pandaid
    if api == "legacy":
        form = {
            "jobId": pandaid,
            "state": "finished",
            "attemptNr": 1,
            "lease": LEASE,
            "cpuConsumptionTime": 42,
        }
        command = pilot.form("/server/panda/updateJob", form).json()["command"]
    else:
        entry = {"job_id": pandaid, "job_status": "finished", "attempt_nr": 1, "lease": LEASE}
        [reply] = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": [entry]}).json()["data"]
        command = reply["data"]["command"]

    assert command in ("NULL", None)
    assert Job.objects.get(pk=pandaid).jobstatus == "finished"
    assert Job.objects.get(pk=w["child"].pk).pending_parents == 0
    _assert_counters_and_feed_exact(w["parent"].task_id)
