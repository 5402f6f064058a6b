"""deploy/grafana/ailuro.json draws families that `/metrics` serves: after a small workload that
makes every family hold a sample, each metric name of the dashboard's queries is one of them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from config.loops import loop_named
from core.services import token_create
from dispatcher.models import Job
from dispatcher.protocol.auth import pilot_token_cache_clear
from dispatcher.services import NewJob
from harvester.services import worker_create
from tests.ailuro.server import activated_jobs
from tests.deploy.conftest import DEPLOY
from tests.factories import QueueFactory

DASHBOARD = DEPLOY / "grafana" / "ailuro.json"
NAME = re.compile(r"\bailuro_[a-z0-9_]+")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries(board: dict[str, Any]) -> list[str]:
    texts = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    texts += [var["definition"] for var in board["templating"]["list"] if var.get("definition")]
    return texts


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    drawn = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert drawn and all(panel["targets"] for panel in drawn)
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in drawn)
    assert all(set(panel["gridPos"]) == {"x", "y", "w", "h"} for panel in board["panels"])


@pytest.mark.django_db
def test_every_metric_the_dashboard_queries_is_served() -> None:
    pilot_token_cache_clear()
    queue = QueueFactory(name="GRAFANA_Q")
    [job, _] = activated_jobs(queue, [NewJob(name=f"j{i}", label="l", command="true") for i in range(2)])
    worker_create(queue=queue, plugin="local")
    loop_named("brokerage").run()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token_create(username='p', role='pilot', queues=[queue.name])}"}
    client = Client()
    got = client.post(
        "/api/v1/pilot/acquire_jobs", {"site_name": queue.name}, content_type="application/json", **auth
    ).json()["data"]["jobs"][0]
    update = {"job_id": got["PandaID"], "attempt_nr": got["attemptNr"], "lease": got["lease"]}
    client.post(
        "/api/v1/pilot/update_job",
        {**update, "job_status": "running"},
        content_type="application/json",
        **auth,
    )
    client.post(
        "/api/v1/pilot/update_job",
        {**update, "job_status": "finished"},
        content_type="application/json",
        **auth,
    )
    assert Job.objects.get(pandaid=job.pandaid).jobstatus == "finished"
    client.get("/metrics")

    text = client.get("/metrics").content.decode()
    served = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    used = {name for query in queries(dashboard()) for name in NAME.findall(query)}
    assert used, "the dashboard queries no ailuro metric"
    assert used <= served, sorted(used - served)
    # Every family of /metrics is drawn somewhere (its samples' names share the family's prefix);
    # the `_created` times a single process adds (multi-process mode has none) are not families.
    families = {
        family.name for family in text_string_to_metric_families(text) if not family.name.endswith("_created")
    }
    assert all(any(name.startswith(family) for name in used) for family in families), sorted(
        family for family in families if not any(name.startswith(family) for name in used)
    )
