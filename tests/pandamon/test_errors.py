"""/errors/: family:code → template → sample jobs, splits, over time, exact counts."""

from __future__ import annotations

import pytest

from tests.pandamon.conftest import World, pinned

pytestmark = pytest.mark.django_db


def test_messages_differing_only_in_hosts_and_numbers_group_under_one_template(client, world: World) -> None:
    data = client.get("/errors/?json").json()
    groups = {(g["key"], g["template"]): g for g in data["errors"]}
    heartbeat = groups[("pilot:1201", "Lost heartbeat from * after * s")]
    assert heartbeat["count"] == 2
    assert heartbeat["samples"] == [world.jobs["isr_4"].pandaid]
    assert groups[("exe:137", "Payload killed: RSS * kB above limit in *")]["count"] == 1
    assert data["failed_attempts"] == 3


def test_errors_split_by_site_task_and_user(client, world: World) -> None:
    data = client.get("/errors/?json").json()
    assert dict(data["by_site"]) == {"SLAC_Q": 2, "CERN_Q": 1}
    assert dict(data["by_task"]) == {world.tasks["isr"].pk: 3}
    assert dict(data["by_user"]) == {"alice": 3}


def test_filters_narrow_the_summary_and_the_window_applies_to_attempt_end(client, world: World) -> None:
    assert client.get("/errors/?computingsite=CERN_Q&json").json()["failed_attempts"] == 1
    # The attempts that ended 1 h and 2 h before the fixture ran fall outside a 1-hour window.
    data = client.get("/errors/?hours=1&json").json()
    assert data["failed_attempts"] == 1
    assert data["errors"][0]["key"] == "exe:137"


def test_the_template_is_a_glob_filter_of_the_job_list(client, world: World) -> None:
    page = client.get("/errors/").content.decode()
    assert "piloterrordiag=Lost+heartbeat+from+%2A+after+%2A+s" in page
    data = client.get("/jobs/?piloterrorcode=1201&piloterrordiag=Lost heartbeat from * after * s&json").json()
    assert [j["pandaid"] for j in data["jobs"]] == [world.jobs["isr_4"].pandaid]


def test_failures_over_time_are_in_the_page_as_a_stacked_chart(client, world: World) -> None:
    page = client.get("/errors/").content.decode()
    assert 'data-figure="errors-over-time"' in page
    assert '"barmode": "stack"' in page


def test_error_page_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    # A plain window reads the error rollups (decision 0003): groups, chart and splits in one
    # statement (+ SET/RESET of its settings), and the archive's horizon (one index read: does the
    # window reach the archive?). On SQLite (no rollups) two ORM GROUP BYs, as with a filter.
    with django_assert_num_queries(pinned(4, sqlite=3)):
        assert client.get("/errors/?days=2").status_code == 200
    # A filter the summaries cannot answer: the same statement scans the selected attempts
    # (+ SET/RESET), and the horizon; on SQLite the same two GROUP BYs and the horizon.
    with django_assert_num_queries(pinned(4, sqlite=3)):
        assert client.get("/errors/?days=2&computingsite=CERN_Q").status_code == 200
