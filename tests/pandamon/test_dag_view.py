"""The DAG payloads (pandamon/dag_view.py) and the JSON of the job-neighbourhood and workflow pages:
task boxes carry their counts, job views collapse to one box per label above the cap, a job's
neighbourhood is bounded by depth, final jobs get dashed edges from the sinks, and the timeline
has one bar per attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.models import JobDependency
from pandamon import dag_view
from tests.pandamon.conftest import World

JOBS = [
    {"pandaid": 1, "name": "a", "label": "isr", "jobstatus": "finished", "is_final": False},
    {"pandaid": 2, "name": "b", "label": "isr", "jobstatus": "failed", "is_final": False},
    {"pandaid": 3, "name": "c", "label": "calib", "jobstatus": "defined", "is_final": False},
    {"pandaid": 4, "name": "f", "label": "finalJob", "jobstatus": "defined", "is_final": True},
]


def _url(x: Any) -> str:
    return f"/x/{x}/"


def test_task_boxes_carry_counts_total_and_the_colour_state() -> None:
    graph = dag_view.task_graph(
        [{"id": 1, "label": "isr"}, {"id": 2, "label": "calib", "final": True}],
        {1: {"finished": 4, "failed": 1, "running": 0}, 2: {"defined": 6}},
        [(1, 2), (1, 99)],
        [],
        url=_url,
    )
    isr, calib = graph["nodes"]
    assert isr["counts"] == {"finished": 4, "failed": 1} and isr["total"] == 5 and isr["state"] == "failed"
    assert isr["text"] == "isr: 4/5 done, 1 failed"
    assert calib["final"] is True and calib["url"] == "/x/2/"
    assert graph["edges"] == [[1, 2]]  # an edge to a node not drawn is dropped
    assert graph["colours"]["failed"] == "#c62828"


def test_a_job_view_above_the_cap_draws_one_box_per_label() -> None:
    edges = [(1, 3), (2, 3)]
    dashed = dag_view.final_edges([1, 2, 3, 4], edges, {4})
    assert dashed == [(3, 4)]
    full = dag_view.job_graph(JOBS, edges, dashed, url=_url, cap=10, focus=3)
    assert full["kind"] == "job" and len(full["nodes"]) == 4
    assert [n["id"] for n in full["nodes"] if n.get("focus")] == [3]
    grouped = dag_view.job_graph(JOBS, edges, dashed, url=_url, cap=3, label_url=lambda s: f"/l/{s}")
    assert grouped["kind"] == "label" and grouped["collapsed_jobs"] == 4
    nodes = {n["id"]: n for n in grouped["nodes"]}
    assert nodes["isr"]["counts"] == {"finished": 1, "failed": 1} and nodes["isr"]["state"] == "failed"
    assert nodes["finalJob"]["final"] is True and nodes["calib"]["url"] == "/l/calib"
    assert grouped["edges"] == [["isr", "calib"]]
    assert grouped["final_edges"] == [["calib", "finalJob"]]


def test_final_edges_only_from_the_sinks_a_partial_view_knows() -> None:
    assert dag_view.final_edges([1, 3], [(1, 3)], {4}, sinks={1}) == []
    assert dag_view.final_edges([1, 3], [(1, 3)], {4}, sinks={3}) == [(3, 4)]


def test_the_timeline_has_one_bar_per_attempt_in_label_rows() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    attempts = [
        {
            "pandaid": 1,
            "attemptnr": 1,
            "label": "isr",
            "state": "failed",
            "start": t0,
            "end": t0 + timedelta(hours=1),
        },
        {
            "pandaid": 1,
            "attemptnr": 2,
            "label": "isr",
            "state": "finished",
            "start": t0,
            "end": t0 + timedelta(hours=2),
        },
        {"pandaid": 3, "attemptnr": 1, "label": "other", "state": "running", "start": t0, "end": t0},
    ]
    tl = dag_view.timeline(attempts, labels=["isr", "calib"], truncated=False, cap=10)
    assert tl["rows"] == ["isr", "calib", "other"]
    assert [(b["row"], b["state"]) for b in tl["bars"]] == [(0, "failed"), (0, "finished"), (2, "running")]
    assert tl["end"] == (t0 + timedelta(hours=2)).isoformat()
    assert dag_view.timeline([], labels=[], truncated=False, cap=1)["start"] is None


@pytest.mark.django_db
def test_the_neighbourhood_json_is_bounded_by_depth_and_collapses_above_the_cap(client, world: World) -> None:
    isr = world.jobs["isr_2"]
    one = client.get(f"/job/{isr.pandaid}/dag/?depth=1&json").json()
    calib = world.jobs["calib_2"].pandaid
    assert {n["id"] for n in one["nodes"]} == {isr.pandaid, calib}
    assert one["parents"] == [] and one["children"] == [calib]
    two = client.get(f"/job/{isr.pandaid}/dag/?depth=2&json").json()
    coadd = world.jobs["coadd"].pandaid
    assert {n["id"] for n in two["nodes"]} == {isr.pandaid, calib, coadd}
    assert sorted(map(tuple, two["edges"])) == sorted(
        JobDependency.objects.filter(
            child_id__in=[calib, coadd], parent_id__in=[isr.pandaid, calib]
        ).values_list("parent_id", "child_id")
    )
    grouped = client.get(f"/job/{coadd}/dag/?depth=2&cap=5&json").json()
    assert grouped["collapsed"] is True
    assert {n["id"]: n["total"] for n in grouped["nodes"]} == {"isr": 6, "calib": 6, "coadd": 1}
    assert client.get(f"/job/{coadd}/dag/?depth=99").status_code == 400
    assert client.get("/job/999999999/dag/").status_code == 404


@pytest.mark.django_db
def test_the_workflow_json_has_the_timeline_and_a_data_id_slice_across_labels(client, world: World) -> None:
    data = client.get(f"/workflow/{world.workflow.pk}/?json").json()
    bars = data["timeline"]["bars"]
    assert {(b["pandaid"], b["attemptnr"]) for b in bars} >= {
        (world.jobs["isr_4"].pandaid, 1),
        (world.jobs["isr_4"].pandaid, 2),
    }
    assert data["timeline"]["truncated"] is False
    sliced = client.get(f"/workflow/{world.workflow.pk}/?data_id=visit:3&json").json()
    assert {n["text"].split(" ", 1)[1] for n in sliced["nodes"]} == {"isr_3", "calib_3"}
    assert client.get(f"/workflow/{world.workflow.pk}/?data_id=visit").status_code == 400
    grouped = client.get(f"/workflow/{world.workflow.pk}/?data_id=visit:3&cap=1&json").json()
    assert grouped["collapsed"] is True and {n["id"] for n in grouped["nodes"]} == {"isr", "calib"}
    assert grouped["edges"] == [["isr", "calib"]]


@pytest.mark.django_db
def test_the_workflow_page_links_job_neighbourhoods(client, world: World) -> None:
    page = client.get(f"/workflow/{world.workflow.pk}/?label=isr").content.decode()
    assert f'href="/job/{world.jobs["isr_0"].pandaid}/dag/"' in page
    grouped = client.get(f"/workflow/{world.workflow.pk}/?label=isr&cap=1").content.decode()
    assert 'id="dag-neighbourhood-link"' not in grouped and 'id="dag-collapsed"' in grouped


@pytest.mark.django_db
def test_no_view_draws_more_job_boxes_than_a_browser_lays_out_in_seconds(client, world: World) -> None:
    # dagre takes minutes for thousands of boxes: `cap` above MAX_JOB_BOXES is a 400 naming it.
    too_many = dag_view.MAX_JOB_BOXES + 1
    coadd = world.jobs["isr_0"].pandaid
    for url in (
        f"/workflow/{world.workflow.pk}/?label=isr&cap={too_many}",
        f"/job/{coadd}/dag/?cap={too_many}",
    ):
        reply = client.get(url)
        assert reply.status_code == 400 and b"cap" in reply.content, url
    assert client.get(f"/job/{coadd}/dag/?cap={dag_view.MAX_JOB_BOXES}").status_code == 200
