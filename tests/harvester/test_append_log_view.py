"""POST /api/v1/pilot/append_log: payload output chunks from pilots, authenticated and capped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.services import token_create
from dispatcher.models import PayloadLog
from harvester.services import CAP_MARKER
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/pilot/append_log"


@pytest.fixture
def pilot_token() -> str:
    return token_create(username="pilot-fleet", role="pilot")


@pytest.fixture
def job() -> Any:
    return JobFactory(jobstatus="running", queue=QueueFactory(name="Q1"), lease="L1", attemptnr=2)


def post(client: Client, token: str | None, body: Any) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(URL, data=raw, content_type="application/json", **headers)


def chunk(job: Any, sequence: int, text: str, **over: Any) -> dict[str, Any]:
    return {"job_id": job.pandaid, "attempt_nr": 2, "lease": "L1", "sequence": sequence, "text": text} | over


def test_chunks_are_stored_in_order(client: Client, pilot_token: str, job: Any) -> None:
    for seq, text in [(1, "first\n"), (2, "second\n"), (3, "third\n")]:
        reply = post(client, pilot_token, chunk(job, seq, text))
        assert reply.status_code == 200, reply.content
        assert reply.json()["success"] is True
    stored = list(PayloadLog.objects.filter(job=job).values_list("attemptnr", "sequence", "text"))
    assert stored == [(2, 1, "first\n"), (2, 2, "second\n"), (2, 3, "third\n")]
    assert reply.json()["data"]["total_bytes"] == len("first\nsecond\nthird\n")


def test_a_resent_chunk_is_not_stored_twice(client: Client, pilot_token: str, job: Any) -> None:
    post(client, pilot_token, chunk(job, 1, "once\n"))
    reply = post(client, pilot_token, chunk(job, 1, "once\n"))
    assert reply.status_code == 200
    assert reply.json()["data"]["duplicate"] is True
    assert PayloadLog.objects.filter(job=job).count() == 1


def test_log_is_capped_per_attempt_with_a_marker(
    client: Client, pilot_token: str, job: Any, settings: Any
) -> None:
    settings.AILURO = {**settings.AILURO, "PAYLOAD_LOG_CAP_BYTES": 2048}
    for seq in range(1, 6):
        reply = post(client, pilot_token, chunk(job, seq, f"{seq}" + "é" * 300))  # 601 bytes each
        assert reply.status_code == 200
    assert reply.json()["data"]["capped"] is True
    texts = list(PayloadLog.objects.filter(job=job).order_by("sequence").values_list("text", flat=True))
    whole = "".join(texts)
    assert len(whole.encode()) <= 2048
    assert whole.endswith(CAP_MARKER.format(cap=2048))
    assert whole.startswith("1" + "é" * 300 + "2")
    assert len(texts) == 4  # the 5th chunk came after the cap and was dropped
    # Another attempt of the same job has its own budget.
    job.attemptnr = 3
    job.save(update_fields=["attemptnr"])
    assert post(client, pilot_token, chunk(job, 1, "fresh", attempt_nr=3)).json()["data"]["capped"] is False


def test_stale_lease_or_attempt_is_refused_with_409(client: Client, pilot_token: str, job: Any) -> None:
    assert post(client, pilot_token, chunk(job, 1, "x", lease="other")).status_code == 409
    assert post(client, pilot_token, chunk(job, 1, "x", attempt_nr=1)).status_code == 409
    job.jobstatus = "finished"
    job.save(update_fields=["jobstatus"])
    assert post(client, pilot_token, chunk(job, 1, "x")).status_code == 409
    assert not PayloadLog.objects.exists()


def test_without_a_pilot_token_nothing_is_stored(client: Client, job: Any) -> None:
    assert post(client, None, chunk(job, 1, "x")).status_code == 401
    assert post(client, "ail_not-a-token", chunk(job, 1, "x")).status_code == 401
    user_token = token_create(username="alice", role="user")
    reply = post(client, user_token, chunk(job, 1, "x"))
    assert reply.status_code == 403
    assert "pilot token" in reply.json()["message"]
    assert not PayloadLog.objects.exists()


def test_token_bound_to_other_queues_is_refused(client: Client, job: Any) -> None:
    token = token_create(username="pilot-q2", role="pilot", queues=["Q2"])
    assert post(client, token, chunk(job, 1, "x")).status_code == 403
    assert not PayloadLog.objects.exists()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("not json", "Expecting value"),
        ([1, 2], "JSON object"),
        ({"attempt_nr": 2, "lease": "L1", "sequence": 1, "text": "x"}, "job_id"),
        ({"job_id": 1, "attempt_nr": 2, "lease": "L1", "sequence": 0, "text": "x"}, "sequence must be >= 1"),
        ({"job_id": 1, "attempt_nr": 2, "sequence": 1, "text": "x"}, "lease"),
        ({"job_id": 1, "attempt_nr": 2, "lease": "L1", "sequence": 1, "text": 5}, "text"),
    ],
)
def test_bad_input_gets_400_naming_the_problem(
    client: Client, pilot_token: str, body: Any, needle: str
) -> None:
    reply = post(client, pilot_token, body)
    assert reply.status_code == 400
    assert needle in reply.json()["message"]
    assert not PayloadLog.objects.exists()


def test_oversized_chunk_gets_413(client: Client, pilot_token: str, job: Any) -> None:
    reply = post(client, pilot_token, chunk(job, 1, "x" * (64 * 1024 + 1)))
    assert reply.status_code == 413
    assert not PayloadLog.objects.exists()


def test_a_chunk_costs_a_fixed_number_of_queries(client: Client, pilot_token: str, job: Any) -> None:
    post(client, pilot_token, chunk(job, 1, "warm"))
    with CaptureQueriesContext(connection) as ctx:
        assert post(client, pilot_token, chunk(job, 2, "x")).status_code == 200
    sql = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    # token lookup; then in one transaction: lock the job row, size + duplicate check, insert
    assert len(sql) == 4, sql
