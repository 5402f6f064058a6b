"""/, /sites/, /site/<name>/, /users/, /user/<name>/."""

from __future__ import annotations

import pytest

from tests.pandamon.conftest import World, pinned

pytestmark = pytest.mark.django_db


def test_overview_shows_states_workflows_site_health_and_latest_failures(client, world: World) -> None:
    data = client.get("/?json").json()
    assert data["jobs_by_state"] == {"finished": 4, "failed": 1, "running": 3}
    assert [f["pandaid"] for f in data["latest_failures"]] == [world.jobs["isr_4"].pandaid]
    page = client.get("/").content.decode()
    assert 'hx-trigger="every 30s"' in page
    assert f'href="/workflow/{world.workflow.pk}/"' in page


def test_site_list_has_per_queue_states_and_failure_rate(client, world: World) -> None:
    data = client.get("/sites/?json").json()
    queues = {q["name"]: q for q in data["queues"]}
    assert queues["SLAC_Q"]["failure_pct"] == 100.0
    assert queues["CERN_Q"]["counts"]["finished"] == 4


def test_site_page_has_queue_stats_node_outliers_and_workers(client, world: World) -> None:
    data = client.get("/site/CERN/?json").json()
    stats = {q["queue"]: q for q in data["queues"]}
    assert stats["CERN_Q"]["finished"] == 4
    assert stats["CERN_Q"]["mean_walltime_s"] == pytest.approx(1800, abs=5)
    assert stats["CERN_Q"]["cpu_efficiency_pct"] == pytest.approx(100 * 1500 / 1800, abs=1)
    assert data["harvester_workers"] == {"running": 1}
    assert client.get("/site/NOWHERE/").status_code == 404


def test_users_and_user_page_count_jobs_from_the_task_counters(client, world: World) -> None:
    users = client.get("/users/?json").json()["users"]
    assert users[0]["username"] == "alice"
    assert users[0]["total"] == 13
    data = client.get("/user/alice/?json").json()
    assert data["counts"] == {"finished": 4, "failed": 1, "running": 3, "defined": 5}
    assert client.get("/user/nobody/").status_code == 404


# `/` and `/sites/` count a window's final jobs per queue, `/` lists the latest failures: one
# query for each reads the job archive's horizon (does the window reach the archive?).
@pytest.mark.parametrize(
    ("url", "queries"),
    [("/", 10), ("/sites/", 4), ("/site/CERN/", pinned(7, sqlite=5)), ("/users/", 1), ("/user/alice/", 2)],
)
def test_query_counts_are_pinned(
    client, world: World, django_assert_num_queries, url: str, queries: int
) -> None:
    with django_assert_num_queries(queries):
        assert client.get(url).status_code == 200


def test_the_overview_refresh_partial_replaces_itself_and_keeps_polling(client, world: World) -> None:
    body = client.get("/", HTTP_HX_REQUEST="true").content.decode()
    assert body.lstrip().startswith('<div id="overview-body"')
    assert 'hx-trigger="every 30s"' in body
    assert "<html" not in body
