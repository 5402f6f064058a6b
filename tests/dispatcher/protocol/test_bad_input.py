"""Bad input gets a 4xx naming the problem, in the envelope of the API asked, and changes nothing."""

from __future__ import annotations

import gzip
import json

import pytest

from dispatcher.models import Job, JobStatusLog
from tests.dispatcher.protocol.conftest import Pilot, activated_job

pytestmark = pytest.mark.django_db

V1_UPDATE = "/api/v1/pilot/update_job"
LEGACY_UPDATE = "/server/panda/updateJob"


def _raw(pilot: Pilot, path: str, body: bytes, content_type: str = "application/json", **extra: str):
    return pilot.client.generic("POST", path, body, content_type=content_type, **pilot.headers, **extra)


def _nested(depth: int) -> str:
    return '{"job_id": 1, "x": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"\x1f\x8b\x08\x00garbage", "application/json", "not valid gzip"),
        (b"{not json", "application/json", "not valid JSON"),
        (gzip.compress(b"{not json", mtime=0), "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
        (b"\xff\xfe", "application/x-www-form-urlencoded", "not valid UTF-8"),
        (_nested(100).encode(), "application/json", "nested deeper than 32"),
        (_nested(100000).encode(), "application/json", "nested deeper than 32"),
        (b"<xml/>", "text/xml", "unsupported Content-Type"),
    ],
)
def test_an_undecodable_body_is_refused_with_a_message(
    pilot: Pilot, body: bytes, content_type: str, message: str
) -> None:
    for path in (V1_UPDATE, LEGACY_UPDATE):
        reply = _raw(pilot, path, body, content_type)

        assert 400 <= reply.status_code < 500, (path, reply.status_code)
        text = reply.json()["message"] if path == V1_UPDATE else reply.json()["errorDialog"]
        assert message in text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"job_status": "running", "attempt_nr": 1}, "jobId (job_id) is required"),
        ({"job_id": "abc", "job_status": "running", "attempt_nr": 1}, "jobId must be a number, got 'abc'"),
        ({"job_id": 1, "attempt_nr": 1}, "state (job_status) is required"),
        ({"job_id": 1, "job_status": "dancing", "attempt_nr": 1}, "state 'dancing' is not one of"),
        ({"job_id": 1, "job_status": "running"}, "attemptNr (attempt_nr) is required"),
        ({"job_id": 1, "job_status": "running", "attempt_nr": "one"}, "attemptNr must be a number"),
        (
            {"job_id": 1, "job_status": "running", "attempt_nr": 1, "max_rss": "lots"},
            "maxRSS must be a number",
        ),
        (
            {"job_id": 1, "job_status": "running", "attempt_nr": 1, "start_time": "yesterday"},
            "startTime must be",
        ),
        ({"job_id": 1, "job_status": "failed", "attempt_nr": 1, "pilot_error_code": 1e12}, "between"),
        ({"job_id": 10**30, "job_status": "running", "attempt_nr": 1}, "out of range"),
        ({"job_id": "nan", "job_status": "running", "attempt_nr": 1}, "finite number"),
        ({"job_id": 1, "job_status": ["running"], "attempt_nr": 1}, "must be a string"),
    ],
)
def test_missing_or_non_numeric_fields_are_refused_and_change_nothing(
    queue, pilot: Pilot, params, message
) -> None:
    job = activated_job(queue)
    pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name})
    before = JobStatusLog.objects.count()

    reply = pilot.json(
        V1_UPDATE, {**params, "job_id": params.get("job_id", job.pandaid)} if "job_id" in params else params
    )

    assert reply.status_code == 400
    body = reply.json()
    assert body["success"] is False and body["data"] is None
    assert message in body["message"]
    assert Job.objects.get(pk=job.pandaid).jobstatus == "sent"
    assert JobStatusLog.objects.count() == before


def test_a_legacy_error_carries_a_status_code_and_dialog(pilot: Pilot) -> None:
    reply = pilot.form(LEGACY_UPDATE, {"state": "running", "attemptNr": "1"})

    assert reply.status_code == 400
    assert reply.json() == {
        "StatusCode": 30,
        "errorDialog": "jobId (job_id) is required: the PandaID of the job",
    }


def test_an_oversized_body_is_refused(pilot: Pilot) -> None:
    huge = b'{"job_id": 1, "pad": "' + b"x" * (17 * 1024 * 1024) + b'"}'

    reply = _raw(pilot, V1_UPDATE, huge)

    assert reply.status_code == 413
    assert "exceeds" in reply.json()["message"]


def test_a_gzip_bomb_is_refused(pilot: Pilot) -> None:
    bomb = gzip.compress(b'{"job_id": 1, "pad": "' + b"0" * (40 * 1024 * 1024) + b'"}')
    assert len(bomb) < 100_000

    reply = _raw(pilot, V1_UPDATE, bomb)

    assert reply.status_code == 413
    assert "once decompressed" in reply.json()["message"]


def test_a_missing_queue_name_is_refused(pilot: Pilot) -> None:
    reply = pilot.json("/api/v1/pilot/acquire_jobs", {"node": "wn"})

    assert reply.status_code == 400
    assert "site_name" in reply.json()["message"]


def test_n_jobs_is_bounded(queue, pilot: Pilot) -> None:
    reply = pilot.json("/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "n_jobs": 10**6})

    assert reply.status_code == 400
    assert "nJobs must be between 1 and 1000" in reply.json()["message"]


def test_a_bulk_list_that_is_not_a_list_is_refused(pilot: Pilot) -> None:
    reply = pilot.json("/api/v1/pilot/update_jobs_bulk", {"job_list": json.dumps({"a": 1})})

    assert reply.status_code == 400
    assert "must be a list of objects" in reply.json()["message"]


def test_get_is_refused_on_update_endpoints(pilot: Pilot) -> None:
    reply = pilot.get(V1_UPDATE)

    assert reply.status_code == 405
    assert reply.json()["message"] == "use POST"
