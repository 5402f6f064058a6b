"""The pilot lane as deployed (deploy/systemd/ailuro-pilot.service): granian serving the pilot
protocol's hot calls beside gunicorn, on the same database and the same Prometheus directory.
gunicorn's /metrics counts the calls the lane served; the lane answers nothing else, not even
reading a large body; a statement past the lane's time limit is a 503 with Retry-After that
changed nothing."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.services import token_create
from dispatcher.models import Job
from dispatcher.services import NewJob
from tests.ailuro.server import AiluroServer, PilotLaneServer, activated_jobs
from tests.ailuro.server import test_database_url as database_url
from tests.core.test_metrics_gunicorn import get, samples
from tests.factories import QueueFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TIME_LIMIT_MS = 400


def call(url: str, body: bytes | None = None, token: str = "", method: str = "POST") -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[AiluroServer, PilotLaneServer]]:
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    web = AiluroServer(tmp_path / "web", shared, workers=1, threads=4)
    lane = PilotLaneServer(
        tmp_path / "lane", {**shared, "AILURO_PILOT_STATEMENT_TIMEOUT_MS": str(TIME_LIMIT_MS)}
    )
    for server in (web, lane):
        server.tmp.mkdir()
    web.start()
    try:
        lane.start()
        try:
            yield web, lane
        finally:
            lane.stop()
    finally:
        web.stop()


def test_the_lane_serves_pilot_calls_whose_metrics_the_web_server_reports(servers) -> None:
    web, lane = servers
    queue = QueueFactory(name="LANE_Q")
    jobs = activated_jobs(queue, [NewJob(name=f"j{i}", label="l", command="true") for i in range(3)])
    token = token_create(username="pilots", role="pilot", queues=[queue.name])
    acquire = json.dumps({"site_name": queue.name, "n_jobs": 3}).encode()
    status, headers, reply = call(lane.url + "/api/v1/pilot/acquire_jobs", acquire, token)
    assert status == 200, lane.log_tail()
    assert headers["server"] == "granian"
    got = reply["data"]["jobs"]
    assert sorted(job["PandaID"] for job in got) == [job.pandaid for job in jobs]
    for job in got:
        update = {
            "job_id": job["PandaID"],
            "job_status": "running",
            "attempt_nr": job["attemptNr"],
            "lease": job["lease"],
        }
        status, _, reply = call(lane.url + "/api/v1/pilot/update_job", json.dumps(update).encode(), token)
        assert (status, reply["success"]) == (200, True), reply
    assert Job.objects.filter(jobstatus="running").count() == 3

    scraped = samples(get(web.url + "/metrics"))
    assert scraped[("ailuro_pilot_calls_total", frozenset({("op", "dispatch"), ("status", "200")}))] == 1
    assert scraped[("ailuro_pilot_calls_total", frozenset({("op", "update"), ("status", "200")}))] == 3
    assert scraped[("ailuro_pilot_jobs_total", frozenset({("kind", "dispatch")}))] == 3


def test_the_lane_answers_nothing_else_and_reads_no_body_it_does_not_serve(servers) -> None:
    web, lane = servers
    # An upload of 512 MiB announced, 64 KiB of it sent: the answer comes before the rest.
    conn = http.client.HTTPConnection("127.0.0.1", lane.port, timeout=10)
    conn.putrequest("POST", "/api/v1/file_server/upload_cache_file")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(512 * 1024 * 1024))
    conn.endheaders(b"x" * 65536)
    response = conn.getresponse()
    assert response.status == 404
    assert "pilot lane" in json.loads(response.read())["detail"]
    conn.close()
    assert call(lane.url + "/server/panda/putFile", b"x")[2]["StatusCode"] == 30  # the legacy envelope
    assert call(lane.url + "/api/v1/pilot/append_log", b"{}")[0] == 404
    for path in ("/jobs/", "/metrics", "/admin/", "/"):
        assert call(lane.url + path, method="GET")[0] == 404, path
    assert call(lane.url + "/healthz", method="GET")[0] == 200
    assert call(lane.url + "/readyz?part=database", method="GET")[0] == 200
    # The web server still answers the pilot calls itself (nginx's backup for the lane).
    assert call(web.url + "/api/v1/pilot/acquire_jobs", b"{}")[0] == 401


def test_a_statement_past_the_time_limit_is_a_503_that_changed_nothing(servers) -> None:
    _, lane = servers
    queue = QueueFactory(name="LANE_T")
    [job] = activated_jobs(queue, [NewJob(name="j", label="l", command="true")])
    token = token_create(username="pilots", role="pilot", queues=[queue.name])
    acquire = json.dumps({"site_name": queue.name}).encode()
    [got] = call(lane.url + "/api/v1/pilot/acquire_jobs", acquire, token)[2]["data"]["jobs"]
    update = json.dumps(
        {
            "job_id": got["PandaID"],
            "job_status": "running",
            "attempt_nr": got["attemptNr"],
            "lease": got["lease"],
        }
    ).encode()

    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        with psycopg.connect(database_url()) as conn, conn.transaction():
            conn.execute("SELECT 1 FROM dispatcher_job WHERE pandaid = %s FOR UPDATE", [job.pandaid])
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        status, headers, reply = call(lane.url + "/api/v1/pilot/update_job", update, token)
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert status == 503, (reply, lane.log_tail())
    assert int(headers["Retry-After"]) > 0
    assert reply["success"] is False and "unavailable" in reply["message"]
    assert TIME_LIMIT_MS / 1000 <= waited < 10
    job.refresh_from_db()
    assert job.jobstatus == "sent"  # nothing of the cancelled update was written
    status, _, reply = call(lane.url + "/api/v1/pilot/update_job", update, token)
    assert (status, reply["success"]) == (200, True)
    job.refresh_from_db()
    assert job.jobstatus == "running"
