"""The campaign API pages like the workflow and job lists (keyset: `limit`, `cursor`, next and
previous links), refuses bad list parameters with a 400 naming them, and every answer it gives —
real data, previews and errors — matches its OpenAPI description; schemathesis over the campaign
operations finds no 5xx and no answer outside the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from rest_framework.test import APIClient

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import Group, GroupAttempt
from core.services import token_create
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import OK, OOM, pilots_run


def _client(username: str = "alice", role: str = "user") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username=username, role=role)}")
    return client


@pytest.mark.django_db
def test_campaign_lists_page_by_keyset_newest_first():
    owner = _client()
    for i in range(3):
        assert (
            owner.post("/api/v1/campaigns/", {"spec": spec_text(name=f"c{i}")}, format="json").status_code
            == 201
        )
    first = owner.get("/api/v1/campaigns/?limit=2").json()
    assert [c["name"] for c in first["results"]] == ["c2", "c1"]
    assert first["previous"] is None and first["next"]
    second = owner.get(first["next"]).json()
    assert ([c["name"] for c in second["results"]], second["next"]) == (["c0"], None)
    assert [c["name"] for c in owner.get("/api/v1/campaigns/?status=draft&limit=1000").json()["results"]] == [
        "c2",
        "c1",
        "c0",
    ]
    campaign_id = first["results"][0]["id"]
    owner.post(f"/api/v1/campaigns/{campaign_id}/launch/", {"preview": True}, format="json")
    actions = owner.get(f"/api/v1/campaigns/{campaign_id}/actions/?limit=1").json()
    assert [a["verb"] for a in actions["results"]] == ["create"] and actions["next"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ("status=faild", "status", "draft, running, paused, done, failed, rejected"),
        ("limit=0", "limit", "1 to 1000"),
        ("limit=abc", "limit", "1 to 1000"),
        ("owner=alice", "owner", "cursor, limit, status"),
    ],
)
def test_bad_list_parameters_are_a_400_naming_them(query, field, says):
    response = _client().get(f"/api/v1/campaigns/?{query}")
    assert response.status_code == 400
    assert (response.json()["field"], says in response.json()["detail"]) == (field, True)


@pytest.fixture
def live(live_server: Any) -> dict[str, Any]:
    """A live server holding a launched campaign with one failed group, and the schema it serves."""
    token = token_create(username="olga", role="operator")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    raw = session.get(f"{live_server.url}/api/schema/", params={"format": "json"}, timeout=30).json()
    return {"url": live_server.url, "session": session, "schema": schemathesis.openapi.from_dict(raw)}


@pytest.mark.django_db(transaction=True)
def test_every_campaign_answer_matches_its_schema(live, queue):
    url, session, schema = live["url"], live["session"], live["schema"]
    checked: list[tuple[str, str, int]] = []

    def call(
        method: str, template: str, path: str, body: Any = None, params: Any = None
    ) -> requests.Response:
        response = session.request(method, f"{url}{path}", json=body, params=params, timeout=30)
        assert response.status_code < 500, response.text
        schema[template][method].validate_response(response)
        checked.append((method, template, response.status_code))
        return response

    created = call("POST", "/api/v1/campaigns/", "/api/v1/campaigns/", {"spec": spec_text(), "comment": "v1"})
    campaign_id = created.json()["id"]
    call("POST", "/api/v1/campaigns/", "/api/v1/campaigns/", {"spec": spec_text() + "extra: 1\n"})
    call("GET", "/api/v1/campaigns/{campaign_id}/dry-run/", f"/api/v1/campaigns/{campaign_id}/dry-run/")
    call(
        "POST",
        "/api/v1/campaigns/{campaign_id}/spec/",
        f"/api/v1/campaigns/{campaign_id}/spec/",
        {"spec": spec_text(size=2), "comment": "smaller groups"},
    )
    verb = "/api/v1/campaigns/{campaign_id}/{verb}/"
    call("POST", verb, f"/api/v1/campaigns/{campaign_id}/launch/", {"preview": True})
    call("POST", verb, f"/api/v1/campaigns/{campaign_id}/launch/", {})
    call("POST", verb, f"/api/v1/campaigns/{campaign_id}/launch/", {})  # 409: not a draft
    campaigns_advance_one_round()
    workflows = list(GroupAttempt.objects.values_list("workflow_id", flat=True))
    pilots_run(queue=queue.name, workflow_ids=workflows, outcome=lambda j: OOM if j.name == "isr_1" else OK)
    campaigns_advance_one_round()
    group = Group.objects.get(step__position=0, name="1-2")
    call("GET", "/api/v1/campaigns/", "/api/v1/campaigns/", params={"status": "running"})
    call("GET", "/api/v1/campaigns/", "/api/v1/campaigns/", params={"status": "faild"})
    call("GET", "/api/v1/campaigns/{campaign_id}/", f"/api/v1/campaigns/{campaign_id}/")
    call("GET", "/api/v1/campaigns/{campaign_id}/actions/", f"/api/v1/campaigns/{campaign_id}/actions/")
    call("POST", verb, f"/api/v1/campaigns/{campaign_id}/pause/", {"preview": True})
    step = "/api/v1/campaign-steps/{step_id}/{verb}/"
    call("POST", step, f"/api/v1/campaign-steps/{group.step_id}/pause/", {"preview": True})
    group_verb = "/api/v1/campaign-groups/{group_id}/{verb}/"
    rescue = {"selection": {"error": "exe:137"}, "overrides": {"memory_mb": 6000}, "preview": True}
    call("POST", group_verb, f"/api/v1/campaign-groups/{group.pk}/rescue/", rescue)
    call("POST", group_verb, f"/api/v1/campaign-groups/{group.pk}/rescue/", {**rescue, "preview": False})
    call("POST", group_verb, f"/api/v1/campaign-groups/{group.pk}/rescue/", {"overrides": {"memory_mb": 0}})
    call("GET", "/api/v1/campaign-groups/{group_id}/", f"/api/v1/campaign-groups/{group.pk}/")
    call("GET", "/api/v1/campaign-groups/{group_id}/", "/api/v1/campaign-groups/999999/")
    statuses = {status for _, _, status in checked}
    assert {200, 201, 400, 404, 409} <= statuses, checked


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schemathesis_over_the_campaign_api(live_server: Any, settings: Any, tmp_path: Path):
    settings.AILURO = {**settings.AILURO, "ANONYMOUS_READ": False}
    token = token_create(username="fuzzer", role="admin", name="schemathesis")
    executable = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    config = Path(__file__).resolve().parents[1] / "interop" / "schemathesis.toml"
    command = [
        executable,
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/schema/",
        "--url",
        live_server.url,
        "-H",
        f"Authorization: Bearer {token}",
        "--include-path-regex",
        "^/api/v1/campaign",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "9",
        "--request-timeout",
        "20",
        "--workers",
        "1",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-12000:]
    assert "/api/v1/campaigns/" in report, report[-3000:]
