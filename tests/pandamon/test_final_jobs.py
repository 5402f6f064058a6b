"""Final jobs on the monitor: the job page and its JSON, the workflow page's list, and the DAG
(a diamond node, dashed edges from the sinks)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.urls import reverse

from dispatcher.models import Job, Task
from dispatcher.services import workflow_submit_spec
from tests.dispatcher.test_api_workflows import client_for
from tests.factories import QueueFactory, UserFactory
from tests.pandamon.conftest import run_job

pytestmark = pytest.mark.django_db

SPEC: dict[str, Any] = {
    "name": "monitored",
    "jobs": [
        {"name": "a", "label": "first", "command": "true"},
        {"name": "b", "label": "second", "command": "true", "depends_on": ["a"]},
        {"name": "c", "label": "side", "command": "true"},
        {"name": "report", "label": "finalJob", "command": "true", "final": True},
    ],
}


def _world() -> tuple[int, dict[str, Job], dict[str, int]]:
    queue = QueueFactory(max_rss_mb=8000)
    wf = workflow_submit_spec(owner=UserFactory(username="alice"), spec=SPEC)
    jobs = {j.name: j for j in Job.objects.filter(workflow=wf)}
    run_job(jobs["a"].pandaid, queue.name, to="finished")
    tasks = dict(Task.objects.filter(workflow=wf).values_list("label", "jeditaskid"))
    return wf.pk, jobs, tasks


def test_the_workflow_page_lists_the_final_job_waiting_and_draws_it_after_the_sinks(client: Any) -> None:
    wf, jobs, tasks = _world()
    data = client.get(f"/workflow/{wf}/?json").json()
    assert data["final_jobs"] == [
        {
            "pandaid": jobs["report"].pandaid,
            "name": "report",
            "label": "finalJob",
            "jeditaskid": tasks["finalJob"],
            "jobstatus": "defined",
            "attemptnr": 1,
            "waiting": True,
        }
    ]
    nodes = {n["id"]: n for n in data["nodes"]}
    assert [i for i, n in nodes.items() if n["final"]] == [tasks["finalJob"]]
    assert data["edges"] == [[tasks["first"], tasks["second"]]]  # the final job has no edges of its own
    assert sorted(data["final_edges"]) == sorted(
        [[tasks["second"], tasks["finalJob"]], [tasks["side"], tasks["finalJob"]]]
    )
    page = client.get(f"/workflow/{wf}/").content.decode()
    assert 'id="final-jobs"' in page and "waiting for the other jobs" in page
    assert 'data-dag="dag-svg"' in page and '"final_edges": [[' in page
    assert "dashed edges: runs after every other job has ended" in page


def test_the_job_level_view_marks_the_final_job(client: Any) -> None:
    wf, jobs, _ = _world()
    data = client.get(f"/workflow/{wf}/?label=finalJob&json").json()
    assert [(n["id"], n["final"], n["text"]) for n in data["nodes"]] == [
        (jobs["report"].pandaid, True, f"{jobs['report'].pandaid} report (final)")
    ]
    assert data["final_edges"] == []
    second = client.get(f"/workflow/{wf}/?label=second&json").json()
    assert [n["final"] for n in second["nodes"]] == [False]


def test_the_workflow_page_reads_final_jobs_in_two_queries_then_one(
    client: Any, django_assert_num_queries: Any
) -> None:
    wf, _, _ = _world()
    cache.clear()
    # workflow (with its task graph), final job ids and states, tasks, counters, the tasks'
    # core-hours
    with django_assert_num_queries(8):  # + the timeline's recorded and current attempts
        assert client.get(f"/workflow/{wf}/").status_code == 200
    with django_assert_num_queries(7):  # which jobs are final is fixed at submission: cached
        assert client.get(f"/workflow/{wf}/").status_code == 200


def test_the_job_page_and_the_api_say_the_job_is_final(client: Any) -> None:
    _, jobs, _ = _world()
    report = jobs["report"].pandaid
    data = client.get(f"/job/{report}/?json").json()
    assert data["kind"] == "final"
    assert (data["job"]["is_final"], data["job"]["pending_parents"]) == (True, 1)
    assert client.get(f"/job/{jobs['a'].pandaid}/?json").json()["kind"] == "dag"
    page = client.get(f"/job/{report}/").content.decode()
    assert 'id="final-kind"' in page and "waiting for the other jobs" in page
    api = client_for("alice")
    body = api.get(reverse("dispatcher:job-detail", args=[report])).json()
    assert (body["is_final"], body["pending_parents"], body["jobstatus"]) == (True, 1, "defined")
    listed = api.get(reverse("dispatcher:job-list"), {"pandaid": report}).json()
    assert [j["is_final"] for j in listed["results"]] == [True]


def test_a_sinks_neighbourhood_reaches_the_final_job_by_a_dashed_edge(client: Any) -> None:
    _, jobs, _ = _world()
    b, report = jobs["b"].pandaid, jobs["report"].pandaid
    data = client.get(f"/job/{b}/dag/?json").json()
    assert {n["id"] for n in data["nodes"]} == {jobs["a"].pandaid, b, report}
    assert data["edges"] == [[jobs["a"].pandaid, b]]
    assert data["final_edges"] == [[b, report]]  # b is a sink of the workflow; a is not
    side = client.get(f"/job/{jobs['c'].pandaid}/dag/?json").json()  # a job alone is its own sink
    assert side["final_edges"] == [[jobs["c"].pandaid, report]]
    final = client.get(f"/job/{report}/dag/?json").json()  # the final job itself: no edges drawn
    assert [n["id"] for n in final["nodes"]] == [report] and final["final_edges"] == []
