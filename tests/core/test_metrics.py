"""`/metrics` after a scripted workload: a workflow submitted through the API, brokered by its loop,
dispatched, heartbeaten and finished through the pilot protocol, workers recorded, the monitor's
fold run. Every family is compared with the database or with the calls made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import ProgrammingError, connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.db.models import Count
from django.test import Client, override_settings
from django.test.client import ClientHandler
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from config import metrics as config_metrics
from config.loops import loop_named
from core.metrics import LoopCollector
from core.metrics import scrape as scrape_text
from core.middleware import PilotLaneMixin
from core.models import LoopStatus
from core.services import token_create
from dispatcher.models import Job, JobChange
from dispatcher.protocol.auth import pilot_token_cache_clear
from dispatcher.services import NewJob, job_transition
from dispatcher.states import JOB_FINAL
from harvester.models import WorkerStatus
from harvester.services import worker_create, worker_set_state
from pandamon.queries.metrics import jobs_by_queue_state
from tests.ailuro.server import activated_jobs, free_port
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
FINAL = {s.value for s in JOB_FINAL}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

SPEC = """
name: metrics-demo
dimensions: {visit: {range: [0, 4]}}
labels:
  isr: {command: "echo {visit}", over: [visit]}
"""


class LaneClientHandler(PilotLaneMixin, ClientHandler):
    """The test client's handler with config.wsgi's pilot lane, as production serves pilots."""


def scrape(client: Client | None = None, **headers: str) -> Samples:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def family(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    pilot_token_cache_clear()
    yield
    pilot_token_cache_clear()


class PilotClient:
    def __init__(self, token: str) -> None:
        self.client = Client()
        self.client.handler = LaneClientHandler()
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json.dumps(body), content_type="application/json", **self.auth)


def test_metrics_after_a_scripted_workload_equal_the_database_and_the_calls_made() -> None:
    queue = QueueFactory(name="METRICS_Q")
    before = scrape()

    # A workflow through the REST API, brokered by the brokerage loop.
    user = APIClient()
    user.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='user')}")
    assert (
        user.generic("POST", "/api/v1/workflows/", SPEC, content_type="application/yaml").status_code == 201
    )
    assert user.get("/api/v1/workflows/999999/").status_code == 404
    assert loop_named("brokerage").run() == 4
    assert Job.objects.filter(jobstatus="activated", queue=queue).count() == 4

    # The pilot protocol: two dispatch calls (one empty), a heartbeat, a final update, a bulk update
    # with one heartbeat and one final, a refused call.
    pilot = PilotClient(token_create(username="pilots", role="pilot", queues=[queue.name]))
    got = pilot.post("/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "n_jobs": 3}).json()
    jobs = got["data"]["jobs"]
    assert len(jobs) == 3
    legacy = pilot.post("/server/panda/getJob", {"siteName": queue.name})
    assert legacy.json()["StatusCode"] == 0

    def update(job: dict[str, Any], state: str) -> dict[str, Any]:
        return {
            "job_id": job["PandaID"],
            "attempt_nr": job["attemptNr"],
            "lease": job["lease"],
            "job_status": state,
        }

    assert pilot.post("/api/v1/pilot/update_job", update(jobs[0], "running")).status_code == 200
    assert pilot.post("/api/v1/pilot/update_job", update(jobs[1], "finished")).status_code == 200
    bulk = {"job_list": [update(jobs[0], "finished"), update(jobs[2], "running")]}
    assert pilot.post("/api/v1/pilot/update_jobs_bulk", bulk).status_code == 200
    assert pilot.post("/api/v1/pilot/acquire_jobs", {"site_name": queue.name}).json()["success"] is False
    assert pilot.post("/api/v1/pilot/update_job", {"job_id": 1}).status_code == 400

    # The monitor's fold of the change feed, then one more final update left unfolded.
    loop_named("monitor").run()
    assert not JobChange.objects.exists()
    folded = scrape()
    assert value(folded, "ailuro_rollup_lag_seconds") == 0
    assert pilot.post("/api/v1/pilot/update_job", update(jobs[2], "finished")).status_code == 200

    # Workers of the queue in three states.
    for status in (WorkerStatus.RUNNING, WorkerStatus.RUNNING, WorkerStatus.FAILED, None):
        worker = worker_create(queue=queue, plugin="local")
        if status is not None:
            worker_set_state(worker_id=worker.pk, status=status)

    scrape_time = datetime.now(UTC)
    after = scrape()

    # Jobs by queue and state: the database's counts, final ones partly folded, partly not.
    db_counts = {
        frozenset({("queue", row["queue_id"] or ""), ("state", row["jobstatus"])}): float(row["n"])
        for row in Job.objects.order_by().values("queue_id", "jobstatus").annotate(n=Count("*"))
    }
    active = {labels: n for labels, n in db_counts.items() if dict(labels)["state"] not in FINAL}
    final = {labels: n for labels, n in db_counts.items() if dict(labels)["state"] in FINAL}
    assert family(after, "ailuro_jobs") == active
    assert family(after, "ailuro_jobs_final_last_hour") == final  # every job here ended minutes ago
    assert value(after, "ailuro_jobs_final_last_hour", queue=queue.name, state="finished") == 3
    assert value(after, "ailuro_jobs", queue=queue.name, state="sent") == 1

    # Pilot calls and jobs: the deltas are the calls just made.
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ailuro_pilot_calls_total", op="dispatch", status="200") == 3
    assert delta("ailuro_pilot_calls_total", op="update", status="200") == 3
    assert delta("ailuro_pilot_calls_total", op="update", status="400") == 1
    assert delta("ailuro_pilot_calls_total", op="update_bulk", status="200") == 1
    assert delta("ailuro_pilot_call_duration_seconds_count", op="dispatch") == 3
    assert delta("ailuro_pilot_call_duration_seconds_count", op="update") == 4
    assert delta("ailuro_pilot_call_duration_seconds_count", op="update_bulk") == 1
    assert delta("ailuro_pilot_call_duration_seconds_sum", op="update") > 0
    assert delta("ailuro_pilot_jobs_total", kind="dispatch") == 4
    assert delta("ailuro_pilot_jobs_total", kind="heartbeat") == 2
    assert delta("ailuro_pilot_jobs_total", kind="final") == 3

    # HTTP requests by route name and status; the pilot lane is not counted there.
    assert delta("ailuro_http_requests_total", view="dispatcher:workflow-list", status="201") == 1
    assert delta("ailuro_http_requests_total", view="dispatcher:workflow-detail", status="404") == 1
    assert delta("ailuro_http_requests_total", view="metrics", status="200") == 2  # `before`, `folded`
    assert delta("ailuro_http_request_duration_seconds_count", view="dispatcher:workflow-list") == 1
    grown = {
        dict(labels)["view"]
        for labels, n in family(after, "ailuro_http_requests_total").items()
        if n > family(before, "ailuro_http_requests_total").get(labels, 0)
    }
    assert grown == {"dispatcher:workflow-list", "dispatcher:workflow-detail", "metrics"}, grown

    # Loops: the gauges of each LoopStatus row.
    rows = {row.name: row for row in LoopStatus.objects.all()}
    assert set(rows) == {"brokerage", "monitor"}
    for name, row in rows.items():
        assert value(after, "ailuro_loop_last_done", loop=name) == row.done
        assert value(after, "ailuro_loop_last_steps", loop=name) == row.steps
        assert value(after, "ailuro_loop_last_duration_seconds", loop=name) == row.duration_s
        assert value(after, "ailuro_loop_last_failed", loop=name) == 0
        age = value(after, "ailuro_loop_last_run_age_seconds", loop=name)
        assert 0 <= age - (scrape_time - row.finished_at).total_seconds() < 5
        assert value(after, "ailuro_loop_last_success_age_seconds", loop=name) == pytest.approx(age)
    assert rows["brokerage"].done == 4

    # Workers per queue and state.
    assert family(after, "ailuro_workers") == {  # the live ones: the failed worker is not counted
        frozenset({("queue", queue.name), ("state", "running")}): 2,
        frozenset({("queue", queue.name), ("state", "submitted")}): 1,
    }

    # The change feed holds the last final update, not folded: its lag is its age.
    if connection.vendor == "postgresql":
        oldest = JobChange.objects.filter(delta__gt=0).order_by("id").first()
        assert oldest is not None
        lag = value(after, "ailuro_rollup_lag_seconds")
        assert 0 <= lag - (scrape_time - oldest.statechangetime).total_seconds() < 5


def test_a_token_guards_the_metrics_when_set() -> None:
    with override_settings(AILURO_METRICS_TOKEN="s3cret"):
        assert Client().get("/metrics").status_code == 401
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        samples = scrape(HTTP_AUTHORIZATION="Bearer s3cret")
    assert ("ailuro_rollup_lag_seconds", frozenset()) in samples
    assert Client().post("/metrics").status_code == 405


def test_http_labels_stay_bounded_whatever_the_path() -> None:
    before = scrape()
    for n in range(5):
        Client().get(f"/no/such/page/{n}/")
    after = scrape()
    counts = Counter(dict(labels)["view"] for (name, labels) in after if name == "ailuro_http_requests_total")
    assert all(not view.startswith("/no/") for view in counts)
    assert (
        value(after, "ailuro_http_requests_total", view="<unresolved>", status="404")
        - value(before, "ailuro_http_requests_total", view="<unresolved>", status="404")
        == 5
    )


@pytest.mark.slow
def test_the_metrics_tests_pass_on_sqlite(tmp_path: Path) -> None:
    """The embedded run's database: jobs counted with one ORM GROUP BY, no change feed (lag 0)."""
    if os.environ.get("DATABASE_URL", "").startswith("sqlite"):
        pytest.skip("already on SQLite")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'metrics.sqlite3'}"
    env["AILURO_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(  # noqa: S603  (our own test run)
        [
            sys.executable,
            "-m",
            "pytest",
            __file__,
            "tests/deploy/test_grafana.py",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


class RefusedCollector:
    """Reads from a PostgreSQL port nobody listens on: the database is unavailable."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        wrapper = DatabaseWrapper({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(free_port())})
        try:
            wrapper.ensure_connection()
        finally:
            wrapper.close()
        yield from ()


class BrokenSqlCollector:
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        with connection.cursor() as cursor:
            cursor.execute("SELEC 1")
        yield from ()


@pytest.mark.usefixtures("postgres_only")
def test_an_unavailable_database_leaves_the_gauges_out_and_the_counters_in() -> None:
    class LaterCollector(LoopCollector):
        """Read after the outage was met: left out without trying."""

    LoopStatus.objects.create(
        name="brokerage",
        holder="h",
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        duration_s=0.5,
        done=1,
        steps=1,
    )
    text = scrape_text(
        process_local=config_metrics.PROCESS_LOCAL,
        collectors=[LoopCollector(), RefusedCollector(), LaterCollector()],
    ).decode()
    samples = parse(text)
    assert family(samples, "ailuro_metrics_collector_up") == {
        frozenset({("collector", "LoopCollector")}): 1,
        frozenset({("collector", "RefusedCollector")}): 0,
        frozenset({("collector", "LaterCollector")}): 0,
    }
    assert value(samples, "ailuro_loop_last_done", loop="brokerage") == 1  # read once, before the outage
    assert "# TYPE ailuro_pilot_calls_total counter" in text
    assert "ailuro_pilot_call_duration_seconds_bucket" in text


@pytest.mark.usefixtures("postgres_only")
def test_a_broken_query_is_a_bug_and_raises() -> None:
    with pytest.raises(ProgrammingError):
        scrape_text(process_local=(), collectors=[BrokenSqlCollector()])


@pytest.mark.parametrize("collector", config_metrics.scrape_collectors(), ids=lambda c: type(c).__name__)
def test_each_scrape_time_collector_is_one_query(collector: Any, django_assert_num_queries: Any) -> None:
    queue = QueueFactory(name="PINNED_Q")
    worker_create(queue=queue, plugin="local")
    LoopStatus.objects.create(
        name="janitor",
        holder="h",
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        duration_s=1,
        done=0,
        steps=1,
    )
    with django_assert_num_queries(1):
        assert list(collector.collect())


def test_final_jobs_are_counted_in_the_last_hour_only_folded_or_not() -> None:
    """Jobs ended at several ages, half of the changes folded: the window's count equals the
    database's, whatever part comes from the summary, the change feed or the live edge."""
    queue = QueueFactory(name="WINDOW_Q")
    jobs = activated_jobs(queue, [NewJob(name=f"w{i}", label="l", command="true") for i in range(8)])
    now = datetime.now(UTC)
    ages_min = [5, 20, 50, 70, 95, 130, 10, 65]
    for job, age in zip(jobs, ages_min, strict=True):
        job_transition(pandaid=job.pandaid, to="sent", cause="test")
        job_transition(pandaid=job.pandaid, to="finished" if age % 2 else "failed", cause="test")
        Job.objects.filter(pandaid=job.pandaid).update(statechangetime=now - timedelta(minutes=age))
        if age == 50:
            loop_named("monitor").run()  # some changes folded, the rest left in the feed
    counts = jobs_by_queue_state(now=now)
    since = now - timedelta(hours=1)
    expected: dict[tuple[str, str], int] = {}
    for job in Job.objects.filter(jobstatus__in=FINAL, statechangetime__gte=since):
        expected[(job.queue_id, job.jobstatus)] = expected.get((job.queue_id, job.jobstatus), 0) + 1
    assert {k: v for k, v in counts.items() if k[1] in FINAL} == expected
    assert sum(expected.values()) == 4  # 5, 20, 50 and 10 minutes ago
