from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatcher.models import Job, JobAttempt
from dispatcher.services.pilot_calls.dispatch import ORDERED_WALK_SQL
from tests.dispatcher.protocol.conftest import Pilot, activated_job

pytestmark = pytest.mark.django_db


def test_legacy_getjob_with_njobs_answers_harvesters_bulk_form(queue, pilot: Pilot) -> None:
    jobs = [activated_job(queue) for _ in range(3)]

    body = pilot.form("/server/panda/getJob", {"siteName": queue.name, "nJobs": "5", "node": "wn"}).json()

    assert body["StatusCode"] == 0
    assert [j["PandaID"] for j in body["jobs"]] == [j.pandaid for j in jobs]


def test_update_jobs_bulk_applies_each_update_on_its_own(queue, pilot: Pilot) -> None:
    jobs = [activated_job(queue) for _ in range(3)]
    got = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "n_jobs": 3}).json()["data"][
        "jobs"
    ]
    updates = [
        {"job_id": got[0]["PandaID"], "job_status": "running", "attempt_nr": 1, "lease": got[0]["lease"]},
        {"job_id": got[1]["PandaID"], "job_status": "finished", "attempt_nr": 1, "lease": got[1]["lease"]},
        {"job_id": got[2]["PandaID"], "job_status": "running", "attempt_nr": 9},
        {"job_status": "running", "attempt_nr": 1},
    ]

    body = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": updates, "harvester_id": "h1"}).json()

    data = body["data"]
    assert [d["success"] for d in data] == [True, True, True, False]
    assert [d["data"]["command"] for d in data[:3]] == [None, None, "tobekilled"]
    assert "job_id" in data[3]["message"]
    assert [Job.objects.get(pk=j.pandaid).jobstatus for j in jobs] == ["running", "finished", "sent"]
    assert JobAttempt.objects.count() == 1


def test_legacy_update_jobs_in_bulk_takes_a_json_string_job_list(queue, pilot: Pilot) -> None:
    import json

    job = activated_job(queue)
    got = pilot.form("/server/panda/getJob", {"siteName": queue.name}).json()
    job_list = json.dumps([{"jobId": job.pandaid, "state": "running", "attemptNr": 1, "lease": got["lease"]}])

    body = pilot.form("/server/panda/updateJobsInBulk", {"jobList": job_list, "harvesterID": "h1"}).json()

    assert body == [True, [{"StatusCode": 0, "command": "NULL"}]]
    assert Job.objects.get(pk=job.pandaid).jobstatus == "running"


def test_job_status_in_both_forms(queue, pilot: Pilot) -> None:
    a = activated_job(queue)
    b = activated_job(queue)
    pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name})

    legacy = pilot.form("/server/panda/getStatus", {"ids": f"{a.pandaid} {b.pandaid} 999999"}).json()
    v1 = pilot.get("/api/v1/pilot/get_job_status", {"job_ids": f"{a.pandaid},{b.pandaid}"}).json()

    assert legacy == {"StatusCode": 0, "status": "sent+activated+unknown", "attemptNr": "1+1+0"}
    assert v1["data"] == [
        {"job_id": a.pandaid, "status": "sent", "attempt_number": 1},
        {"job_id": b.pandaid, "status": "activated", "attempt_number": 1},
    ]


def test_worker_status_is_acknowledged(pilot: Pilot) -> None:
    legacy = pilot.gzip_json(
        "/server/panda/updateWorkerPilotStatus", {"workerID": "777", "harvesterID": "h", "status": "started"}
    )
    v1 = pilot.json(
        "/api/v1/pilot/update_worker_status", {"worker_id": 777, "harvester_id": "h", "status": "finished"}
    )

    assert legacy.json() == {"StatusCode": 0}
    assert v1.json() == {"success": True, "message": "", "data": None}


def test_json_with_content_encoding_gzip_is_accepted(queue, pilot: Pilot) -> None:
    job = activated_job(queue)

    body = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name}, gzipped=True).json()

    assert body["data"]["jobs"][0]["PandaID"] == job.pandaid


def test_query_string_parameters_are_accepted(queue, pilot: Pilot) -> None:
    job = activated_job(queue)

    reply = pilot.client.generic(
        "POST", f"/server/panda/getJob?siteName={queue.name}&node=wn7", b"", content_type="", **pilot.headers
    )

    assert reply.json()["PandaID"] == job.pandaid
    assert Job.objects.get(pk=job.pandaid).node == "wn7"


def test_the_queue_record_is_generated_from_the_queue(queue) -> None:
    from django.test import Client

    client = Client()
    full = client.get(f"/cache/schedconfig/{queue.name}.all.json").json()
    short = client.get(f"/cache/schedconfig/{queue.name}.json").json()

    assert full == short
    assert (full["nickname"], full["panda_resource"], full["atlas_site"]) == (
        "STUB_QUEUE",
        "STUB_QUEUE",
        "STUB_SITE",
    )
    assert (full["status"], full["state"], full["maxrss"], full["corecount"]) == ("online", "ACTIVE", 4000, 8)
    assert full["acopytools"]["pl"] == ["mv"]
    assert client.get("/cache/schedconfig/NOPE.json").status_code == 404


def test_a_queues_schedconfig_overrides_reach_the_pilot(queue) -> None:
    from django.test import Client

    queue.plugin_params = {"schedconfig": {"catchall": "curlgetjob", "timefloor": 5}}
    queue.save()

    record = Client().get(f"/cache/schedconfig/{queue.name}.all.json").json()

    assert (record["catchall"], record["timefloor"]) == ("curlgetjob", 5)


def test_storage_endpoints_and_the_wrapper_are_served(queue) -> None:
    from django.test import Client

    client = Client()
    endpoints = client.get("/cache/ddmendpoints.json").json()
    wrapper = client.get("/trf/user/runpayload.sh")

    assert endpoints["STUB_SITE_LOCAL"]["site"] == "STUB_SITE"
    assert endpoints["STUB_SITE_LOCAL"]["rprotocols"]["0"]["flavour"] == "POSIX"
    assert wrapper.status_code == 200 and wrapper.content.decode().rstrip().endswith('"$@"')
    assert client.get("/trf/user/other.sh").status_code == 404


def test_a_bulk_acquire_is_still_one_statement(queue, pilot: Pilot) -> None:
    for _ in range(20):
        activated_job(queue)
    pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name})

    with CaptureQueriesContext(connection) as queries:
        body = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "n_jobs": 100}).json()

    assert len(body["data"]["jobs"]) == 19
    assert [q["sql"] for q in queries][:1] == [ORDERED_WALK_SQL] and len(queries) == 2


def test_open_mode_serves_pilots_without_a_token(queue, settings) -> None:
    settings.AILURO_PILOT = {**settings.AILURO_PILOT, "AUTH": "open"}
    job = activated_job(queue)

    body = Pilot(None).json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name}).json()

    assert body["data"]["jobs"][0]["PandaID"] == job.pandaid


def test_a_configured_trf_base_url_is_used(queue, pilot: Pilot, settings) -> None:
    settings.AILURO_PILOT = {
        **settings.AILURO_PILOT,
        "TRF_BASE_URL": "http://pandaserver-doma.cern.ch:25080/trf/user",
    }
    activated_job(queue, environment={"A": "1 2"})

    job = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name}).json()["data"]["jobs"][0]

    assert job["transformation"] == "http://pandaserver-doma.cern.ch:25080/trf/user/runpayload.sh"
    assert job["jobPars"] == "env 'A=1 2' bash -c true"
    assert job["environment"] == {"A": "1 2"}


def test_a_bulk_of_heartbeats_is_one_statement_with_logs_and_counters(queue, pilot: Pilot) -> None:
    from dispatcher.models import JobStatusLog
    from dispatcher.queries import task_state_counts
    from tests.factories import TaskFactory

    task = TaskFactory()
    for _ in range(50):
        activated_job(queue, task=task)
    got = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "n_jobs": 50}).json()["data"][
        "jobs"
    ]
    updates = [
        {"job_id": j["PandaID"], "job_status": "running", "attempt_nr": 1, "lease": j["lease"], "max_rss": 10}
        for j in got
    ]

    with CaptureQueriesContext(connection) as queries:
        body = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": updates}).json()

    assert len(queries) == 1
    assert all(d["data"] == {"StatusCode": 0, "command": None} for d in body["data"])
    assert Job.objects.filter(jobstatus="running", max_rss_kb=10).count() == 50
    assert JobStatusLog.objects.filter(jobstatus="running").count() == 50
    assert task_state_counts([task.pk])[task.pk] == {"running": 50}


def test_a_bulk_refuses_another_queues_job_alone(queue, pilot: Pilot) -> None:
    from core.services import token_create
    from tests.factories import QueueFactory

    mine = activated_job(queue)
    [got] = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name}).json()["data"]["jobs"]
    other_queue = QueueFactory(name="OTHER")
    theirs = activated_job(other_queue)
    [their_job] = (
        Pilot(token_create(username="o", role="pilot", queues=["OTHER"]))
        .json("/api/v1/pilot/acquire_jobs", {"site_name": "OTHER"})
        .json()["data"]["jobs"]
    )
    updates = [
        {"job_id": mine.pandaid, "job_status": "running", "attempt_nr": 1, "lease": got["lease"]},
        {"job_id": theirs.pandaid, "job_status": "running", "attempt_nr": 1, "lease": their_job["lease"]},
    ]

    data = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": updates}).json()["data"]

    assert [d["success"] for d in data] == [True, False]
    assert data[1]["status"] == 403
    assert Job.objects.get(pk=mine.pandaid).jobstatus == "running"
    assert Job.objects.get(pk=theirs.pandaid).jobstatus == "sent"
