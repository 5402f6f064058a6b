"""/tasks/ and /task/<id>/: progress from the counters, facets, top errors, histograms."""

from __future__ import annotations

import pytest

from dispatcher.models import Task
from tests.pandamon.conftest import World, pinned

pytestmark = pytest.mark.django_db


def test_task_list_counts_come_from_the_task_counters(client, world: World) -> None:
    data = client.get("/tasks/?json").json()
    tasks = {t["name"].split("/")[-1]: t for t in data["tasks"]}
    assert tasks["isr"]["counts"] == {"finished": 4, "failed": 1, "running": 1}
    assert tasks["coadd"]["counts"] == {"defined": 1}
    assert dict(data["facets"]["username"]) == {"alice": 3}


def test_task_facet_filters_and_pages(client, world: World) -> None:
    data = client.get("/tasks/?label=isr|coadd&json").json()
    assert {t["name"].split("/")[-1] for t in data["tasks"]} == {"isr", "coadd"}
    first = client.get("/tasks/?display_limit=2&json").json()
    second = client.get(f"/tasks/?display_limit=2&cursor={first['next_cursor']}&json").json()
    assert len(first["tasks"]) == 2
    assert len(second["tasks"]) == 1
    assert second["next_cursor"] is None


def test_task_page_shows_progress_top_errors_and_histograms(client, world: World) -> None:
    task = world.tasks["isr"]
    data = client.get(f"/task/{task.pk}/?json").json()
    assert data["progress"]["total"] == 6
    assert round(data["progress"]["finished_pct"], 1) == 66.7
    assert data["top_errors"][0]["template"] == "Lost heartbeat from * after * s"
    # Failed attempts, as /errors/?jeditaskid= counts them (the page links there): two lost
    # heartbeats, and the out-of-memory attempt of a job that finished on its retry.
    assert [(g["key"], g["count"]) for g in data["top_errors"]] == [("pilot:1201", 2), ("exe:137", 1)]
    assert sum(n for _, _, n in data["histograms"]["walltime_min"]) == 5
    assert sum(n for _, _, n in data["histograms"]["max_rss_mb"]) == 5
    assert data["slowest_jobs"][0]["walltime"]
    page = client.get(f"/task/{task.pk}/").content.decode()
    assert 'data-figure="walltime-hist"' in page
    assert 'data-figure="rss-hist"' in page


def test_task_list_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    with django_assert_num_queries(3):  # page of tasks, their counters, facets
        assert client.get("/tasks/").status_code == 200


def test_task_page_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    # Task, counters, top errors from the rollup (+ SET/RESET of its settings), histograms and
    # slowest jobs in one statement (+ SET/RESET). On SQLite: top errors in one GROUP BY, the
    # task's timed jobs in one read (binned in Python). Its core-hours, all time and since its
    # resume, in one GROUP BY.
    with django_assert_num_queries(pinned(9, sqlite=5)):
        assert client.get(f"/task/{world.tasks['isr'].pk}/").status_code == 200


def test_the_task_page_stops_polling_once_the_task_is_final(client, world: World) -> None:
    task = world.tasks["isr"]
    url = f"/task/{task.pk}/"
    assert 'hx-trigger="every 30s"' in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    Task.objects.filter(pk=task.pk).update(status="done")
    body = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert body.lstrip().startswith('<div id="task-body"')
    assert "hx-trigger" not in body
