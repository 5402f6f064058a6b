"""Replay every request the real PanDA pilot made in the recorded runs (every encoding), against
ailuro, and check the replies and the database.

Each run's job is created in ailuro beforehand; the pilot's `jobId` is rewritten to its pandaid.
Where the recorded server sent `tobekilled`, an operator cancels the job just before that request,
so the kill comes from ailuro's own rule. Everything else is sent as recorded: encoding, parameter
types, attemptNr.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from dispatcher.models import Job, JobAttempt, JobStatusLog, Queue
from dispatcher.services import job_transition
from tests.dispatcher.protocol.conftest import activated_job

pytestmark = pytest.mark.django_db

HERE = Path(__file__).parent / "transcripts"
CASES = sorted(p.stem for p in HERE.glob("*.jsonl"))


def _records(case: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (HERE / f"{case}.jsonl").read_text().splitlines() if line.strip()]


def _send(client: Client, record: dict[str, Any], params: dict[str, Any], token: str) -> Any:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    encoding = record["decode"]["encoding"]
    if record["method"] == "GET":
        return client.get(record["path"], params, **auth)
    if encoding.startswith("gzip+json"):
        body = gzip.compress(json.dumps(params).encode())
        return client.generic("POST", record["path"], body, content_type="application/json", **auth)
    assert encoding == "form-urlencoded", encoding
    body = urlencode({k: str(v) for k, v in params.items()}).encode()
    return client.generic(
        "POST",
        record["path"],
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
        **auth,
    )


@pytest.mark.parametrize("case", CASES)
def test_every_recorded_pilot_request_is_understood(case: str, queue: Queue, token: str) -> None:
    # The real PanDA pilot does not echo the lease: its queues fence on the attempt number alone.
    Queue.objects.filter(pk=queue.pk).update(pilot_flavour="panda", require_lease=False)
    records = _records(case)
    has_job = any(r["note"] == "JOB" for r in records)
    job = activated_job(queue, command="echo hi from the payload") if has_job else None
    client = Client()
    killed = False
    for record in records:
        params = dict(record["params"])
        if "jobId" in params and job is not None:
            params["jobId"] = str(job.pandaid) if isinstance(params["jobId"], str) else job.pandaid
        recorded = record["reply"]
        if isinstance(recorded, dict) and recorded.get("command") == "tobekilled" and not killed:
            job_transition(pandaid=job.pandaid, to="cancelled", cause="operator kill")  # type: ignore[union-attr]
            killed = True

        reply = _send(client, record, params, token)

        assert reply.status_code == 200, (record["seq"], reply.content[:300])
        note = record["note"]
        if note == "queuedata":
            assert reply.json()["nickname"] == "STUB_QUEUE"
            assert reply.json()["atlas_site"] == "STUB_SITE"
        elif note == "storage data":
            assert "STUB_SITE_LOCAL" in reply.json()
        elif note == "transformation download":
            assert b'"$@"' in reply.content
        elif note == "JOB":
            body = reply.json()
            assert body["StatusCode"] == 0 and body["PandaID"] == job.pandaid  # type: ignore[union-attr]
            assert body["attemptNr"] == 1 and body["lease"]
            assert Job.objects.get(pk=body["PandaID"]).jobstatus == "sent"
        elif note == "NO JOB":
            assert reply.json() == {"StatusCode": 20, "errorDialog": "no jobs in PanDA"}
        elif note.startswith("legacy updateWorkerPilotStatus"):
            assert reply.json()["StatusCode"] == 0
        elif note.startswith("update #"):
            body = reply.json()
            assert body["StatusCode"] == 0
            if case.startswith("M_"):
                # The minimal job of case M had no attemptNr, so the pilot reported 0. ailuro always
                # sends attemptNr and fences on it: attempt 0 is not the job's attempt.
                assert body["command"] == "tobekilled"
            else:
                assert body["command"] == recorded["command"], record["seq"]
        else:
            raise AssertionError(f"unexpected record {note!r}")
    _check_database(case, job)


def _check_database(case: str, job: Any) -> None:
    if job is None:
        assert case.startswith(("E_", "N_"))
        assert not Job.objects.exclude(jobstatus="activated").exists()
        return
    row = Job.objects.get(pk=job.pandaid)
    history = list(JobStatusLog.objects.filter(job_id=job.pandaid).values_list("jobstatus", flat=True))
    if case.startswith(("C_", "L_")):
        assert row.jobstatus == "cancelled"
        # C is killed on its second running heartbeat, L on its first.
        before = ["sent", "starting", "running"] if case.startswith("C_") else ["sent", "starting"]
        assert history == [*before, "cancelled"]
        assert not JobAttempt.objects.exists()
    elif case.startswith("M_"):
        assert row.jobstatus == "sent" and history == ["sent"]
    elif case.startswith("D_"):
        attempt = JobAttempt.objects.get(job_id=job.pandaid)
        assert (row.jobstatus, attempt.transexitcode, attempt.piloterrorcode) == ("failed", 3, 1368)
        assert history == ["sent", "starting", "running", "failed"]
    else:
        attempt = JobAttempt.objects.get(job_id=job.pandaid)
        assert (row.jobstatus, attempt.jobstatus, attempt.transexitcode) == ("finished", "finished", 0)
        assert history == ["sent", "starting", "running", "finished"]
        assert row.node == "vm" and row.pilot_id.endswith(("3.11.5.1", "3.7.0.36"))
        assert row.starttime is not None and row.endtime is not None
        assert row.starttime.year == 2026 and row.endtime >= row.starttime
