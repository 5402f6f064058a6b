"""The campaign pages: list, campaign grid with actions, group attempt chain."""

from __future__ import annotations

import pytest
from django.test import Client

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import Group, GroupAttempt
from campaigns.services import campaign_create, campaign_launch
from core.services import token_create
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import BAD, OK, pilots_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_campaign(operator, queue):
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    wfs = list(GroupAttempt.objects.values_list("workflow_id", flat=True))
    pilots_run(queue=queue.name, workflow_ids=wfs, outcome=lambda j: BAD if j.name == "isr_4" else OK)
    campaigns_advance_one_round()
    return campaign


def test_list_page_shows_counts_in_a_fixed_number_of_queries(failed_campaign, django_assert_num_queries):
    client = Client()
    with django_assert_num_queries(1):
        response = client.get("/campaigns/")
    assert response.status_code == 200
    assert b"/campaign/%d/" % failed_campaign.pk in response.content
    data = client.get("/campaigns/?json").json()["results"][0]
    assert data["groups"] == {"total": 4, "accepted": 1, "running": 0, "failed": 1}


def test_campaign_page_shows_the_grid_and_actions_for_failed_groups(
    failed_campaign, operator, django_assert_num_queries
):
    # campaign, steps, their groups, the wasted core-hours, the audit log, and the finished jobs of
    # the groups' current attempts (the campaign's spec for its cluster labels, attempts, their
    # tasks, the task counters): whatever the number of groups
    with django_assert_num_queries(9):
        anonymous = Client().get(f"/campaign/{failed_campaign.pk}/")
    text = anonymous.content.decode()
    assert anonymous.status_code == 200
    assert "step1" in text
    # Anonymous readers see no buttons, only how to get them.
    assert 'value="rescue"' not in text
    assert f'href="/login/?next=/campaign/{failed_campaign.pk}/"' in text
    client = Client()
    client.force_login(operator)
    text = client.get(f"/campaign/{failed_campaign.pk}/").content.decode()
    assert 'value="rescue"' in text
    assert text.count('value="restart"') == 1  # only the failed group offers recovery
    assert "act-hint" not in text
    data = Client().get(f"/campaign/{failed_campaign.pk}/?json").json()
    assert [g["status"] for g in data["steps"][0]["groups"]] == ["accepted", "failed"]


def test_an_operator_rescues_from_the_page_and_sees_the_outcome(failed_campaign, operator):
    operator.is_superuser = True
    operator.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(operator)
    group = Group.objects.get(step__position=0, name="4-6")
    response = client.post(
        f"/campaign/{failed_campaign.pk}/action/",
        {"object": "group", "id": group.pk, "verb": "rescue", "error": "exe:65", "memory_mb": "3000"},
        follow=True,
    )
    assert response.status_code == 200
    assert "rescue: attempt 2: rerunning 2 jobs" in response.content.decode()
    group.refresh_from_db()
    assert (group.status, group.attempt) == ("running", 2)
    page = client.get(f"/campaign/group/{group.pk}/").content.decode()
    assert "rescue" in page
    assert "jobs.isr_4" in page


def test_anonymous_visitors_cannot_act(failed_campaign):
    group = Group.objects.get(step__position=0, name="4-6")
    response = Client().post(
        f"/campaign/{failed_campaign.pk}/action/", {"object": "group", "id": group.pk, "verb": "accept"}
    )
    assert response.status_code == 403
    group.refresh_from_db()
    assert group.status == "failed"


def test_campaign_and_group_json_carry_group_counts_and_iso_times(failed_campaign):
    client = Client()
    page = client.get(f"/campaign/{failed_campaign.pk}/?json").json()
    token = token_create(username="operator", role="operator")
    api = client.get(f"/api/v1/campaigns/{failed_campaign.pk}/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    expected = {"total": 4, "accepted": 1, "running": 0, "failed": 1}
    assert page["groups"] == api["groups"] == expected
    assert "T" in page["created_at"] and "T" in api["created_at"]  # ISO 8601, as the API writes it
    group = Group.objects.get(status="failed")
    attempts = client.get(f"/campaign/group/{group.pk}/?json").json()["attempts"]
    assert all("T" in a["created_at"] for a in attempts)


def test_a_user_who_is_neither_owner_nor_operator_sees_no_buttons(failed_campaign):
    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(username="mallory"))
    text = client.get(f"/campaign/{failed_campaign.pk}/").content.decode()
    assert 'value="rescue"' not in text
    assert 'value="pause"' not in text
    assert "Only its owner and operators may act on this campaign." in text
