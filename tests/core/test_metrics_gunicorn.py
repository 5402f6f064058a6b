"""`/metrics` of the real server, gunicorn with two worker processes in prometheus_client's
multi-process mode: whichever worker answers a scrape, it reports the requests and pilot calls of
both."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from core.services import token_create
from dispatcher.models import Job
from dispatcher.services import NewJob
from tests.ailuro.server import AiluroServer, activated_jobs
from tests.factories import QueueFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HEALTHZ = ("ailuro_http_requests_total", frozenset({("view", "core:healthz"), ("status", "200")}))


def get(url: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def post_json(url: str, body: dict[str, Any], token: str) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def per_process(directory: Path, key: tuple[str, frozenset[tuple[str, str]]]) -> dict[str, float]:
    """The value of one counter in each process's own file (counter_<pid>.db)."""
    found = {}
    for path in sorted(directory.glob("counter_*.db")):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in metric.samples:
                if (s.name, frozenset(s.labels.items())) == key:
                    found[path.stem] = s.value
    return found


def test_two_gunicorn_workers_report_the_sum_of_both(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    queue = QueueFactory(name="MP_Q")
    jobs = activated_jobs(queue, [NewJob(name=f"j{i}", label="l", command="true") for i in range(6)])
    token = token_create(username="pilots", role="pilot", queues=[queue.name])
    server = AiluroServer(tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}, workers=2, threads=1)
    server.start()
    try:
        # Concurrent requests until both workers have served some (each round is bounded).
        total = 0
        for _ in range(10):
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: get(server.url + "/healthz"), range(40)))
            total += 40
            if len([v for v in per_process(multiproc, HEALTHZ).values() if v > 0]) >= 2:
                break
        served = per_process(multiproc, HEALTHZ)
        assert len([v for v in served.values() if v > 0]) == 2, served
        assert sum(served.values()) == total

        # Pilot calls spread over both workers as well.
        with ThreadPoolExecutor(3) as pool:
            got = list(
                pool.map(
                    lambda _: post_json(
                        server.url + "/api/v1/pilot/acquire_jobs",
                        {"site_name": queue.name, "n_jobs": 2},
                        token,
                    ),
                    range(3),
                )
            )
        assert sum(len(answer["data"]["jobs"]) for answer in got) == len(jobs)

        # Every scrape, whichever worker answers it, holds the sum over both.
        for _ in range(6):
            scraped = samples(get(server.url + "/metrics"))
            assert scraped[HEALTHZ] == total
            dispatch = frozenset({("op", "dispatch"), ("status", "200")})
            assert scraped[("ailuro_pilot_calls_total", dispatch)] == 3
            assert scraped[("ailuro_pilot_jobs_total", frozenset({("kind", "dispatch")}))] == len(jobs)
            sent = frozenset({("queue", queue.name), ("state", "sent")})
            assert scraped[("ailuro_jobs", sent)] == Job.objects.filter(jobstatus="sent").count() == len(jobs)
    finally:
        server.stop()
