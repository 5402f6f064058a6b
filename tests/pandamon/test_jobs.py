"""/jobs/: exact facets, clickable values, keyset pages, sort, ?json, pinned query count."""

from __future__ import annotations

import pytest

from tests.pandamon.conftest import World, pinned

pytestmark = pytest.mark.django_db


def test_facets_are_exact_counts_of_the_whole_selection(client, world: World) -> None:
    data = client.get("/jobs/?json").json()
    facets = {name: dict(values) for name, values in data["facets"].items()}
    # Jobs that changed state in the last 12 h: 4 finished, 1 failed, 3 running.
    assert facets["jobstatus"] == {"finished": 4, "failed": 1, "running": 3}
    assert data["total"] == 8
    assert facets["computingsite"] == {"CERN_Q": 6, "SLAC_Q": 1, "CERN_HIMEM": 1}
    assert facets["piloterrorcode"] == {1201: 1}
    assert facets["label"] == {"isr": 6, "calib": 2}


@pytest.mark.parametrize(
    ("query", "total"),
    [
        ("computingsite=CERN*", 7),
        ("computingsite=cern*", 0),
        ("computingsite=*_Q", 7),
        ("computingsite=*_q", 0),
        ("computingsite=*HIM*", 1),
        ("computingsite=*him*", 0),
        ("computingsite=C*_Q", 6),
        ("computingsite=c*_q", 0),
    ],
)
def test_wildcards_match_case_as_postgresql_does_on_every_database(
    client, world: World, query: str, total: int
) -> None:
    # SQLite's LIKE ignores ASCII case; the embedded run must answer as PostgreSQL does.
    assert client.get(f"/jobs/?{query}&json").json()["total"] == total


def test_a_facet_value_links_to_the_list_filtered_by_it(client, world: World) -> None:
    page = client.get("/jobs/").content.decode()
    assert 'href="/jobs/?computingsite=SLAC_Q"' in page
    filtered = client.get("/jobs/?computingsite=SLAC_Q&json").json()
    assert [j["pandaid"] for j in filtered["jobs"]] == [world.jobs["isr_4"].pandaid]
    assert dict(filtered["facets"]["jobstatus"]) == {"failed": 1}


def test_keyset_pages_cover_every_job_once_in_order(client, world: World) -> None:
    seen: list[int] = []
    url = "/jobs/?json&display_limit=3"
    for _ in range(10):
        data = client.get(url).json()
        seen += [j["pandaid"] for j in data["jobs"]]
        if not data["next_cursor"]:
            break
        url = f"/jobs/?json&display_limit=3&cursor={data['next_cursor']}"
    assert len(seen) == 8
    assert seen == sorted(seen, reverse=True)


def test_keyset_pages_by_state_change_time_cover_every_job_once(client, world: World) -> None:
    seen: list[int] = []
    url = "/jobs/?json&display_limit=2&sortby=time-descending"
    for _ in range(10):
        data = client.get(url).json()
        seen += [j["pandaid"] for j in data["jobs"]]
        if not data["next_cursor"]:
            break
        url = f"/jobs/?json&display_limit=2&sortby=time-descending&cursor={data['next_cursor']}"
    assert sorted(seen) == sorted(set(seen))
    assert len(seen) == 8


def test_a_task_filter_drops_the_window_so_never_started_jobs_show(client, world: World) -> None:
    data = client.get(f"/jobs/?jeditaskid={world.tasks['coadd'].pk}&json").json()
    assert data["total"] == 1
    assert dict(data["facets"]["jobstatus"]) == {"defined": 1}


def test_active_states_are_shown_whatever_their_age(client, world: World) -> None:
    data = client.get("/jobs/?jobstatus=running&hours=1&json").json()
    assert data["total"] == 3


def test_htmx_request_gets_only_the_results_partial(client, world: World) -> None:
    response = client.get("/jobs/?label=isr", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="job-results">')
    assert "<html" not in body


def test_bad_sort_and_bad_cursor_are_400_naming_the_parameter(client, world: World) -> None:
    assert client.get("/jobs/?sortby=colour").status_code == 400
    response = client.get("/jobs/?cursor=notacursor&json")
    assert response.status_code == 400
    assert "cursor" in response.json()["error"]


def test_job_list_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    # The archive's horizon (one index read: does the window reach the archive?), one page of
    # rows, one statement for all facets and the chart (+ SET/RESET of its settings), and, the
    # selection being scanned (a negated state), its row estimate (EXPLAIN); on SQLite one GROUP BY
    # for the facets and one for the chart.
    with django_assert_num_queries(pinned(6, sqlite=4)):
        assert client.get("/jobs/?label=isr|calib&jobstatus=!defined").status_code == 200


def test_an_empty_facet_value_is_not_specified_and_filters_for_empty(client, world: World) -> None:
    page = client.get("/jobs/").content.decode()
    assert 'href="/jobs/?resourcetype=Not+specified"' in page
    assert client.get("/jobs/?resourcetype=Not specified&json").json()["total"] == 8
