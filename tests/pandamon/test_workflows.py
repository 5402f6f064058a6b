"""/workflows/ and /workflow/<id>/: progress and the DAG, task level and job level."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.factories import UserFactory
from tests.pandamon.conftest import World

pytestmark = pytest.mark.django_db


def test_workflow_list_shows_exact_progress(client, world: World) -> None:
    data = client.get("/workflows/?json").json()
    (wf,) = data["workflows"]
    assert wf["counts"] == {"finished": 4, "failed": 1, "running": 3, "defined": 5}
    assert round(wf["finished_pct"], 1) == round(100 * 4 / 13, 1)


def test_task_level_dag_has_state_coloured_nodes_with_counts_and_task_links(client, world: World) -> None:
    data = client.get(f"/workflow/{world.workflow.pk}/?json").json()
    assert data["level"] == "task"
    t = world.tasks
    assert sorted(data["edges"]) == sorted([[t["isr"].pk, t["calib"].pk], [t["calib"].pk, t["coadd"].pk]])
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes[t["isr"].pk]["state"] == "failed"
    assert nodes[t["isr"].pk]["text"] == "isr: 4/6 done, 1 failed"
    assert nodes[t["coadd"].pk]["url"] == f"/task/{t['coadd'].pk}/"
    page = client.get(f"/workflow/{world.workflow.pk}/").content.decode()
    assert 'data-dag="dag-svg"' in page and '"failed": "#c62828"' in page  # failed red in the embedded DAG


def test_job_level_view_of_a_label_and_of_a_data_id_slice(client, world: World) -> None:
    data = client.get(f"/workflow/{world.workflow.pk}/?label=calib&json").json()
    assert data["level"] == "job"
    assert len(data["nodes"]) == 6
    assert data["edges"] == []  # calib jobs depend on isr jobs, not on each other
    sliced = client.get(f"/workflow/{world.workflow.pk}/?data_id.visit=3&json").json()
    names = {n["text"].split(" ", 1)[1] for n in sliced["nodes"]}
    assert names == {"isr_3", "calib_3"}
    assert sliced["edges"] == [[world.jobs["isr_3"].pandaid, world.jobs["calib_3"].pandaid]]


def test_a_bad_data_id_key_is_a_400(client, world: World) -> None:
    assert client.get(f"/workflow/{world.workflow.pk}/?data_id.a-b=1").status_code == 400


def test_workflow_list_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    with django_assert_num_queries(3):  # workflows, their tasks, the counters
        assert client.get("/workflows/").status_code == 200


def test_workflow_page_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    cache.clear()
    # workflow (with its task graph, stored at submission), tasks, counters, the tasks'
    # core-hours, the timeline's recorded attempts and current ones
    with django_assert_num_queries(6):
        assert client.get(f"/workflow/{world.workflow.pk}/").status_code == 200
    with django_assert_num_queries(6):
        assert client.get(f"/workflow/{world.workflow.pk}/").status_code == 200
    with django_assert_num_queries(8):  # + job slice and its edges
        assert client.get(f"/workflow/{world.workflow.pk}/?label=isr").status_code == 200


# --- the workflow's buttons -----------------------------------------------------------------------


def test_the_owner_sees_the_buttons_that_apply_and_others_see_none(client, world: World) -> None:
    url = f"/workflow/{world.workflow.pk}/"
    anonymous = client.get(url).content.decode()
    assert 'id="workflow-actions"' not in anonymous
    assert f'href="/login/?next={url}"' in anonymous  # and how to get the buttons
    client.force_login(UserFactory(username="mallory"))
    stranger = client.get(url).content.decode()
    assert 'id="workflow-actions"' not in stranger
    assert "Only its owner and operators may act on this workflow." in stranger
    client.force_login(world.user)
    page = client.get(url).content.decode()
    assert "act-hint" not in page
    for verb in ("pause", "retry", "restart", "cancel"):
        assert f'formaction="/workflow/{world.workflow.pk}/{verb}/"' in page
    assert f'formaction="/workflow/{world.workflow.pk}/resume/"' not in page  # nothing is paused


def test_pause_and_resume_buttons_call_the_workflow_services(client, world: World) -> None:
    client.force_login(world.user)
    response = client.post(f"/workflow/{world.workflow.pk}/pause/")
    assert (response.status_code, response["Location"]) == (302, f"/workflow/{world.workflow.pk}/")
    world.workflow.refresh_from_db()
    assert world.workflow.status == "paused"
    page = client.get(f"/workflow/{world.workflow.pk}/").content.decode()
    assert f"workflow {world.workflow.pk}: pause: paused tasks 3, held 0" in page
    assert f'formaction="/workflow/{world.workflow.pk}/resume/"' in page
    assert client.post(f"/workflow/{world.workflow.pk}/resume/").status_code == 302
    world.workflow.refresh_from_db()
    assert world.workflow.status == "running"


def test_workflow_buttons_refuse_strangers_unknown_verbs_and_gets(client, world: World) -> None:
    url = f"/workflow/{world.workflow.pk}/pause/"
    assert client.post(url).status_code == 401
    client.force_login(UserFactory(username="mallory"))
    assert client.post(url).status_code == 403
    assert client.get(url).status_code == 405
    assert client.post(f"/workflow/{world.workflow.pk}/explode/").status_code == 404
    world.workflow.refresh_from_db()
    assert world.workflow.status != "paused"
