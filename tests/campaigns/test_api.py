"""The campaign REST API: create, read, verbs with preview, and errors with the right status."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import ActionLog, Campaign, Group, GroupAttempt
from core.services import token_create
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import OK, OOM, pilots_run

pytestmark = pytest.mark.django_db


def _client(username: str, role: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username=username, role=role)}")
    return client


@pytest.fixture
def owner():
    return _client("alice", "user")


def test_create_then_read_a_campaign(owner):
    response = owner.post("/api/v1/campaigns/", {"spec": spec_text()}, format="json")
    assert response.status_code == 201
    campaign_id = response.json()["id"]
    detail = owner.get(f"/api/v1/campaigns/{campaign_id}/").json()
    assert (detail["name"], detail["owner"], detail["status"], detail["versions"][0]["version"]) == (
        "c1",
        "alice",
        "draft",
        1,
    )
    listing = owner.get("/api/v1/campaigns/?status=draft").json()["results"]
    assert [c["name"] for c in listing] == ["c1"]


def test_a_bad_spec_gets_400_naming_the_field_and_writes_nothing(owner):
    response = owner.post(
        "/api/v1/campaigns/", {"spec": spec_text().replace("[isr]", "[nope]")}, format="json"
    )
    assert response.status_code == 400
    assert "unknown label 'nope'" in response.json()["detail"]
    assert owner.post("/api/v1/campaigns/", {}, format="json").status_code == 400
    assert not Campaign.objects.exists()


def test_launch_preview_is_the_dry_run_and_launch_then_conflicts(owner):
    campaign_id = owner.post("/api/v1/campaigns/", {"spec": spec_text()}, format="json").json()["id"]
    preview = owner.post(f"/api/v1/campaigns/{campaign_id}/launch/", {"preview": True}, format="json")
    assert preview.status_code == 200
    assert [s["groups"] for s in preview.json()["steps"]] == [2, 2]
    assert Campaign.objects.get().status == "draft"
    assert owner.post(f"/api/v1/campaigns/{campaign_id}/launch/", format="json").status_code == 200
    again = owner.post(f"/api/v1/campaigns/{campaign_id}/launch/", format="json")
    assert again.status_code == 409
    assert "only a draft" in again.json()["detail"]


def test_others_may_read_but_not_act_and_operators_may_act(owner, queue):
    campaign_id = owner.post("/api/v1/campaigns/", {"spec": spec_text()}, format="json").json()["id"]
    bob = _client("bob", "user")
    assert bob.get(f"/api/v1/campaigns/{campaign_id}/").status_code == 200
    assert bob.post(f"/api/v1/campaigns/{campaign_id}/launch/", format="json").status_code == 403
    assert APIClient().get(f"/api/v1/campaigns/{campaign_id}/").status_code in (401, 403)
    ops = _client("olga", "operator")
    assert ops.post(f"/api/v1/campaigns/{campaign_id}/launch/", format="json").status_code == 200
    assert ops.post("/api/v1/campaigns/999999/pause/", format="json").status_code == 404
    assert ops.post(f"/api/v1/campaigns/{campaign_id}/explode/", format="json").status_code == 404


def test_group_rescue_over_the_api_with_selection_and_overrides(owner, queue):
    campaign_id = owner.post("/api/v1/campaigns/", {"spec": spec_text()}, format="json").json()["id"]
    owner.post(f"/api/v1/campaigns/{campaign_id}/launch/", format="json")
    campaigns_advance_one_round()
    wfs = GroupAttempt.objects.values_list("workflow_id", flat=True)
    pilots_run(queue=queue.name, workflow_ids=list(wfs), outcome=lambda j: OOM if j.name == "isr_1" else OK)
    campaigns_advance_one_round()
    group = Group.objects.get(step__position=0, name="1-3")
    body = {"selection": {"error": "exe:137"}, "overrides": {"memory_mb": 6000}, "preview": True}
    preview = owner.post(f"/api/v1/campaign-groups/{group.pk}/rescue/", body, format="json")
    assert preview.status_code == 200
    assert preview.json()["rerun"] == ["calibrate_1", "isr_1"]
    done = owner.post(
        f"/api/v1/campaign-groups/{group.pk}/rescue/", {**body, "preview": False}, format="json"
    )
    assert done.status_code == 200
    detail = owner.get(f"/api/v1/campaign-groups/{group.pk}/").json()
    assert [a["kind"] for a in detail["attempts"]] == ["submit", "rescue"]
    diff = {d["path"]: d["new"] for d in detail["attempts"][1]["config_diff"]}
    assert diff["jobs.isr_1"] == {"memory_mb": 6000}
    assert detail["attempts"][1]["jobs"] == {"defined": 2}
    bad = owner.post(
        f"/api/v1/campaign-groups/{group.pk}/rescue/", {"selection": {"colour": "red"}}, format="json"
    )
    assert bad.status_code == 400
    assert "unknown key(s) colour" in bad.json()["detail"]
    refused = owner.post(f"/api/v1/campaign-groups/{group.pk}/accept/", format="json")
    assert refused.status_code == 409
    actions = owner.get(f"/api/v1/campaigns/{campaign_id}/actions/").json()["results"]
    assert [(a["actor"], a["verb"], a["result"]) for a in actions[:2]] == [
        ("alice", "accept", "refused"),
        ("alice", "rescue", "ok"),
    ]
    assert ActionLog.objects.filter(verb="rescue").count() == 1


def test_the_list_costs_the_same_queries_for_one_or_many_campaigns(owner, django_assert_num_queries):
    for i in range(3):
        owner.post("/api/v1/campaigns/", {"spec": spec_text(name=f"c{i}")}, format="json")
    # the token lookup and one annotated campaign query
    with django_assert_num_queries(2) as captured:
        response = owner.get("/api/v1/campaigns/")
    assert len(response.json()["results"]) == 3
    assert sum("campaigns_campaign" in q["sql"] for q in captured.captured_queries) == 1
