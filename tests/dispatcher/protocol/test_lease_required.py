"""The lease fence: on a queue that requires the lease (every queue but the real PanDA pilot's), an
update without the dispatch's lease, or with another one, writes nothing and is told to die, in
both APIs, single and bulk; a queue that does not require it fences on the attempt number alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dispatcher.models import Job, JobAttempt, JobStatusLog, Queue, TaskCountDelta
from tests.dispatcher.protocol.conftest import Pilot, activated_job

pytestmark = pytest.mark.django_db

# What a call sends for one update: the endpoint's own parameter names.
Send = Callable[[Pilot, dict[str, Any]], str | None]


def _legacy_one(pilot: Pilot, u: dict[str, Any]) -> str | None:
    form = {"jobId": u["id"], "state": u["status"], "attemptNr": u["attempt"], "lease": u["lease"]}
    reply = pilot.form("/server/panda/updateJob", form).json()
    assert reply["StatusCode"] == 0
    return None if reply["command"] == "NULL" else str(reply["command"])


def _v1_one(pilot: Pilot, u: dict[str, Any]) -> str | None:
    params = {"job_id": u["id"], "job_status": u["status"], "attempt_nr": u["attempt"], "lease": u["lease"]}
    reply = pilot.json("/api/v1/pilot/update_job", params).json()
    assert reply["success"] is True
    command = reply["data"]["command"]
    return None if command is None else str(command)


def _legacy_bulk(pilot: Pilot, u: dict[str, Any]) -> str | None:
    entry = {"jobId": u["id"], "state": u["status"], "attemptNr": u["attempt"], "lease": u["lease"]}
    ok, [reply] = pilot.form("/server/panda/updateJobsInBulk", {"jobList": json.dumps([entry])}).json()
    assert ok is True
    return None if reply["command"] == "NULL" else str(reply["command"])


def _v1_bulk(pilot: Pilot, u: dict[str, Any]) -> str | None:
    entry = {"job_id": u["id"], "job_status": u["status"], "attempt_nr": u["attempt"], "lease": u["lease"]}
    [reply] = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": [entry]}).json()["data"]
    assert reply["success"] is True
    command = reply["data"]["command"]
    return None if command is None else str(command)


ENDPOINTS: dict[str, Send] = {
    "legacy": _legacy_one,
    "v1": _v1_one,
    "legacy-bulk": _legacy_bulk,
    "v1-bulk": _v1_bulk,
}


def _dispatched(pilot: Pilot, queue: Queue) -> dict[str, Any]:
    activated_job(queue)
    [job] = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "node": "wn01"}).json()[
        "data"
    ]["jobs"]
    return {"id": job["PandaID"], "attempt": job["attemptNr"], "lease": job["lease"]}


def _everything(pandaid: int) -> dict[str, Any]:
    """Every column of the job row and everything an update could have added."""
    job = Job.objects.get(pk=pandaid)
    return {
        "job": {f.attname: getattr(job, f.attname) for f in Job._meta.concrete_fields},
        "attempts": list(JobAttempt.objects.filter(job_id=pandaid).values()),
        "log": list(JobStatusLog.objects.filter(job_id=pandaid).values()),
        "deltas": list(TaskCountDelta.objects.filter(task_id=job.task_id).values()),
    }


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("status", ["running", "finished", "failed"])
@pytest.mark.parametrize("lease", ["", "0" * 32])
def test_an_update_without_this_dispatchs_lease_changes_nothing_and_is_told_to_die(
    queue: Queue, pilot: Pilot, endpoint: str, status: str, lease: str
) -> None:
    assert queue.require_lease  # the default
    job = _dispatched(pilot, queue)
    before = _everything(job["id"])

    command = ENDPOINTS[endpoint](pilot, {**job, "status": status, "lease": lease})

    assert command == "tobekilled"
    assert _everything(job["id"]) == before
    # The pilot holding the lease is still heard.
    assert ENDPOINTS[endpoint](pilot, {**job, "status": status}) is None
    assert Job.objects.get(pk=job["id"]).jobstatus == status


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_queue_that_does_not_require_the_lease_fences_on_the_attempt_alone(
    queue: Queue, pilot: Pilot, endpoint: str
) -> None:
    Queue.objects.filter(pk=queue.pk).update(pilot_flavour="panda", require_lease=False)
    job = _dispatched(pilot, queue)
    wrong = _everything(job["id"])

    # A lease that is echoed must still be the dispatch's.
    assert ENDPOINTS[endpoint](pilot, {**job, "status": "running", "lease": "0" * 32}) == "tobekilled"
    assert _everything(job["id"]) == wrong
    assert ENDPOINTS[endpoint](pilot, {**job, "status": "running", "lease": ""}) is None
    assert ENDPOINTS[endpoint](pilot, {**job, "status": "finished", "lease": ""}) is None
    assert Job.objects.get(pk=job["id"]).jobstatus == "finished"
    assert JobAttempt.objects.filter(job_id=job["id"], jobstatus="finished").count() == 1


def test_a_bulk_refuses_the_unleased_update_alone(queue: Queue, pilot: Pilot) -> None:
    a, b = _dispatched(pilot, queue), _dispatched(pilot, queue)
    before = _everything(b["id"])
    updates = [
        {"job_id": a["id"], "job_status": "finished", "attempt_nr": 1, "lease": a["lease"]},
        {"job_id": b["id"], "job_status": "finished", "attempt_nr": 1},
    ]

    data = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": updates}).json()["data"]

    assert [d["data"]["command"] for d in data] == [None, "tobekilled"]
    assert Job.objects.get(pk=a["id"]).jobstatus == "finished"
    assert _everything(b["id"]) == before
