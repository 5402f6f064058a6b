from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatcher.models import Job, JobStatusLog
from dispatcher.queries import task_state_counts
from dispatcher.services.pilot_calls.dispatch import ORDERED_WALK_SQL
from tests.dispatcher.protocol.conftest import Pilot, activated_job
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/pilot/acquire_jobs"


def test_acquire_hands_out_the_highest_priority_job_with_a_lease_and_marks_it_sent(
    queue, pilot: Pilot
) -> None:
    low = activated_job(queue, currentpriority=100, command="echo low")
    high = activated_job(queue, currentpriority=900, command="echo 'high'", request_memory_mb=1500)

    reply = pilot.json(URL, {"site_name": queue.name, "node": "wn01", "memory": 4000})

    assert reply.status_code == 200
    body = reply.json()
    assert body["success"] is True and body["message"] == ""
    [job] = body["data"]["jobs"]
    assert job["PandaID"] == high.pandaid
    assert job["StatusCode"] == 0 and job["attemptNr"] == 1
    assert len(job["lease"]) == 32
    assert job["jobPars"] == "bash -c 'echo '\"'\"'high'\"'\"''"
    assert job["transformation"] == "http://testserver/trf/user/runpayload.sh"
    assert (job["minRamCount"], job["coreCount"]) == (1500, 1)
    assert {"maxWalltime", "maxDiskCount", "command"} <= set(job)
    row = Job.objects.get(pk=high.pandaid)
    assert (row.jobstatus, row.lease, row.node) == ("sent", job["lease"], "wn01")
    assert row.dispatched_at is not None
    assert Job.objects.get(pk=low.pandaid).jobstatus == "activated"
    log = JobStatusLog.objects.get(job_id=high.pandaid)
    assert (log.previous, log.jobstatus) == ("activated", "sent")
    assert task_state_counts([high.task_id])[high.task_id] == {"sent": 1}


def test_n_jobs_hands_out_several_distinct_jobs_each_with_its_own_lease(queue, pilot: Pilot) -> None:
    jobs = [activated_job(queue) for _ in range(5)]

    body = pilot.json(URL, {"site_name": queue.name, "n_jobs": 3}).json()

    got = body["data"]["jobs"]
    assert [j["PandaID"] for j in got] == [j.pandaid for j in jobs[:3]]
    assert len({j["lease"] for j in got}) == 3
    assert Job.objects.filter(jobstatus="sent").count() == 3


def test_an_empty_queue_answers_no_jobs(queue, pilot: Pilot) -> None:
    body = pilot.json(URL, {"site_name": queue.name}).json()

    assert body == {"success": False, "message": "No jobs in PanDA", "data": None}


@pytest.mark.parametrize(
    ("request_extra", "job_extra"),
    [
        ({"memory": 1000}, {"request_memory_mb": 2000}),
        ({"disk_space": 500}, {"request_disk_mb": 1000}),
        ({"prod_source_label": "user"}, {"prodsourcelabel": "managed"}),
        ({"resource_type": "SCORE"}, {"resource_type": "MCORE"}),
        ({"remaining_time": 600}, {"request_walltime_s": 3600}),
    ],
)
def test_a_job_that_does_not_match_the_pilot_is_not_dispatched(
    queue, pilot: Pilot, request_extra, job_extra
) -> None:
    job = activated_job(queue, **job_extra)

    body = pilot.json(URL, {"site_name": queue.name, **request_extra}).json()

    assert body["success"] is False
    assert Job.objects.get(pk=job.pandaid).jobstatus == "activated"


def test_a_job_of_another_queue_is_never_dispatched(queue, pilot: Pilot) -> None:
    other = activated_job(QueueFactory(name="OTHER"))

    body = pilot.json(URL, {"site_name": queue.name}).json()

    assert body["success"] is False
    assert Job.objects.get(pk=other.pandaid).jobstatus == "activated"


def test_another_queues_token_is_refused_and_nothing_changes(queue) -> None:
    from core.services import token_create

    QueueFactory(name="OTHER")
    stranger = Pilot(token_create(username="other-fleet", role="pilot", queues=["OTHER"]))
    job = activated_job(queue)

    reply = stranger.json(URL, {"site_name": queue.name})

    assert reply.status_code == 403
    assert "not bound to queue 'STUB_QUEUE'" in reply.json()["message"]
    assert Job.objects.get(pk=job.pandaid).jobstatus == "activated"


def test_without_a_token_the_pilot_is_refused(queue) -> None:
    job = activated_job(queue)

    reply = Pilot(None).json(URL, {"site_name": queue.name})

    assert reply.status_code == 401
    assert "Bearer" in reply.json()["message"]
    assert Job.objects.get(pk=job.pandaid).jobstatus == "activated"


def test_a_user_token_is_not_a_pilot_token(queue) -> None:
    from core.services import token_create

    reply = Pilot(token_create(username="alice", role="user")).json(URL, {"site_name": queue.name})

    assert reply.status_code == 401


def test_acquire_is_one_statement_after_its_plan_settings_once_the_token_is_known(
    queue, pilot: Pilot
) -> None:
    for _ in range(3):
        activated_job(queue)
    pilot.json(URL, {"site_name": queue.name})  # warms the token cache

    with CaptureQueriesContext(connection) as queries:
        reply = pilot.json(URL, {"site_name": queue.name, "n_jobs": 2})

    assert len(reply.json()["data"]["jobs"]) == 2
    assert [q["sql"] for q in queries][:1] == [ORDERED_WALK_SQL] and len(queries) == 2


def test_a_cold_token_costs_one_more_query(queue, pilot: Pilot) -> None:
    activated_job(queue)

    with CaptureQueriesContext(connection) as queries:
        pilot.json(URL, {"site_name": queue.name})

    assert len(queries) == 3  # the token, the plan settings, the dispatch
