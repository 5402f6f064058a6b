from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.services import token_create
from dispatcher.models import Job, JobAttempt, JobStatusLog
from dispatcher.queries import task_state_counts
from dispatcher.services import job_transition
from tests.dispatcher.protocol.conftest import Pilot, activated_job
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db

ACQUIRE = "/api/v1/pilot/acquire_jobs"
UPDATE = "/api/v1/pilot/update_job"


def _dispatch(pilot: Pilot, queue: Any) -> dict[str, Any]:
    [job] = pilot.json(ACQUIRE, {"site_name": queue.name, "node": "wn01"}).json()["data"]["jobs"]
    return job


def _update(pilot: Pilot, job: dict[str, Any], status: str, **extra: Any) -> Any:
    params = {
        "job_id": job["PandaID"],
        "job_status": status,
        "attempt_nr": job["attemptNr"],
        "lease": job["lease"],
    }
    return pilot.json(UPDATE, {**params, **extra})


def test_a_job_runs_through_starting_running_and_finished(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)

    replies = [
        _update(pilot, job, "starting"),
        _update(pilot, job, "running", cpu_consumption_time=12.5, max_rss=2048, core_count=1),
        _update(
            pilot,
            job,
            "finished",
            trans_exit_code=0,
            max_rss=4096,
            max_pss=3000,
            mean_core_count=1.5,
            start_time="2026-01-01 00:00:00",
            end_time="2026-01-01 01:00:00",
        ),
    ]

    assert [r.json() for r in replies] == [
        {"success": True, "message": "", "data": {"StatusCode": 0, "command": None}}
    ] * 3
    row = Job.objects.get(pk=job["PandaID"])
    assert row.jobstatus == "finished"
    assert (row.max_rss_kb, row.max_pss_kb, row.actual_cores, row.cpu_time_s) == (4096, 3000, 1.5, 12.5)
    assert row.endtime is not None and row.endtime.year == 2026 and row.endtime.hour == 1
    attempt = JobAttempt.objects.get(job_id=job["PandaID"])
    assert (attempt.attemptnr, attempt.jobstatus, attempt.max_rss_kb, attempt.node) == (
        1,
        "finished",
        4096,
        "wn01",
    )
    history = list(JobStatusLog.objects.filter(job_id=job["PandaID"]).values_list("jobstatus", flat=True))
    assert history == ["sent", "starting", "running", "finished"]
    assert task_state_counts([row.task_id])[row.task_id] == {"finished": 1}


def test_a_heartbeat_never_moves_a_job_backwards(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    _update(pilot, job, "running")

    reply = _update(pilot, job, "starting")

    assert reply.json()["data"] == {"StatusCode": 0, "command": None}
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == "running"
    assert JobStatusLog.objects.filter(job_id=job["PandaID"], jobstatus="starting").count() == 0


def test_a_repeated_heartbeat_is_harmless_and_refreshes_the_heartbeat_time(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    _update(pilot, job, "running")
    first = Job.objects.get(pk=job["PandaID"]).heartbeat_at

    _update(pilot, job, "running")

    row = Job.objects.get(pk=job["PandaID"])
    assert row.jobstatus == "running" and row.heartbeat_at is not None and first is not None
    assert row.heartbeat_at >= first
    assert JobStatusLog.objects.filter(job_id=job["PandaID"], jobstatus="running").count() == 1


def test_a_failed_payload_stores_every_error_family(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)

    _update(
        pilot,
        job,
        "failed",
        trans_exit_code=3,
        pilot_error_code=1305,
        pilot_error_diag="Failed to execute payload",
        exe_error_code=7,
        exe_error_diag="bad input",
    )

    attempt = JobAttempt.objects.get(job_id=job["PandaID"])
    assert (attempt.transexitcode, attempt.piloterrorcode, attempt.exeerrorcode) == (3, 1305, 7)
    assert (attempt.piloterrordiag, attempt.exeerrordiag) == ("Failed to execute payload", "bad input")
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == "failed"


def test_a_duplicate_final_update_is_harmless(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    _update(pilot, job, "finished")

    reply = _update(pilot, job, "finished")

    assert reply.json()["data"] == {"StatusCode": 0, "command": None}
    assert JobAttempt.objects.filter(job_id=job["PandaID"]).count() == 1


def test_a_stale_attempt_is_told_to_die_and_changes_nothing(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)

    reply = pilot.json(UPDATE, {"job_id": job["PandaID"], "job_status": "running", "attempt_nr": 7})

    assert reply.json()["data"] == {"StatusCode": 0, "command": "tobekilled"}
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == "sent"


def test_a_wrong_lease_is_told_to_die_and_changes_nothing(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)

    reply = _update(pilot, {**job, "lease": "0" * 32}, "finished")

    assert reply.json()["data"]["command"] == "tobekilled"
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == "sent"
    assert not JobAttempt.objects.exists()


def test_an_update_without_lease_is_fenced_by_the_attempt_alone_where_no_lease_is_required(
    queue, pilot: Pilot
) -> None:
    queue.require_lease = False  # a queue of the real PanDA pilot, which does not echo the lease
    queue.save(update_fields=["require_lease"])
    activated_job(queue)
    job = _dispatch(pilot, queue)

    reply = pilot.json(UPDATE, {"job_id": job["PandaID"], "job_status": "running", "attempt_nr": 1})

    assert reply.json()["data"]["command"] is None
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == "running"


def test_an_unknown_job_is_told_to_die(queue, pilot: Pilot) -> None:
    reply = pilot.json(UPDATE, {"job_id": 987654321, "job_status": "running", "attempt_nr": 1})

    assert reply.json()["data"]["command"] == "tobekilled"


@pytest.mark.parametrize("kill", ["cancelled", "closed", "pruned"])
def test_an_operator_kill_reaches_the_pilot_as_tobekilled(queue, pilot: Pilot, kill: str) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    _update(pilot, job, "running")
    job_transition(pandaid=job["PandaID"], to=kill, cause="operator")

    heartbeat = _update(pilot, job, "running")
    final = _update(pilot, job, "failed", pilot_error_code=1144)

    assert heartbeat.json()["data"]["command"] == "tobekilled"
    assert final.json()["data"]["command"] == "tobekilled"
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == kill
    assert not JobAttempt.objects.exists()


def test_another_queues_token_cannot_update_a_job_and_nothing_changes(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    QueueFactory(name="OTHER")
    stranger = Pilot(token_create(username="other-fleet", role="pilot", queues=["OTHER"]))

    heartbeat = _update(stranger, job, "running")
    final = _update(stranger, job, "finished")

    assert (heartbeat.status_code, final.status_code) == (403, 403)
    assert "not bound" in final.json()["message"]
    assert Job.objects.get(pk=job["PandaID"]).jobstatus == "sent"
    assert not JobAttempt.objects.exists()


def test_a_heartbeat_is_one_statement(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)

    with CaptureQueriesContext(connection) as queries:
        _update(pilot, job, "running")

    assert len(queries) == 1


def test_a_finished_update_is_one_statement(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    _update(pilot, job, "running")

    with CaptureQueriesContext(connection) as queries:
        _update(pilot, job, "finished")

    # Fence, job row, attempt row, status log, counters and DAG release: one prepared statement.
    assert len(queries) == 1, [q["sql"][:80] for q in queries]
    assert JobAttempt.objects.get(job_id=job["PandaID"]).jobstatus == "finished"


def test_a_failed_update_query_count_is_pinned(queue, pilot: Pilot) -> None:
    activated_job(queue)
    job = _dispatch(pilot, queue)
    _update(pilot, job, "running")

    with CaptureQueriesContext(connection) as queries:
        _update(pilot, job, "failed")

    # Fence + job_attempt_end (attempt row, retry rules, transition, log, counters, pruning),
    # savepoints included (the test runs inside a transaction).
    assert len(queries) == 16, [q["sql"][:80] for q in queries]
