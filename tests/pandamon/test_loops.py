"""The loop strip: `/loops/`, the dashboard and every page's header show each loop's last run, lag,
work done and error, and mark a stalled loop with a class and the word "stalled"."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from config.loops import LOOPS, loop_named
from core.models import LoopStatus
from tests.loop_runs import record_fresh_runs, record_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_loops(db: None) -> None:
    record_fresh_runs()


def test_every_loop_of_the_table_is_listed_and_running(client, fresh_loops) -> None:
    data = client.get("/loops/?json").json()
    assert data["stalled"] == []
    assert [loop["name"] for loop in data["loops"]] == [loop.name for loop in LOOPS]
    brokerage = data["loops"][0]
    assert brokerage["period_s"] == 5.0
    assert brokerage["max_lag_s"] == 95.0
    assert brokerage["done"] == 3
    assert brokerage["steps"] == 2
    assert brokerage["error"] == ""
    assert brokerage["stalled"] is False
    assert 1 <= brokerage["lag_s"] < 10

    page = client.get("/loops/").content.decode()
    assert "Loops running" in page
    assert "loops-stalled" not in page
    assert "loop-stalled" not in page
    assert "stalled" not in page.split('id="loops"')[1].split("</tbody>")[0]


def test_a_stalled_loop_turns_the_strip_red_on_every_view(client, fresh_loops, settings) -> None:
    """The state a stopped beat leaves: the last run is older than the loop's allowed lag."""
    record_run("monitor", ago_s=settings.AILURO_LOOPS["monitor"]["max_lag_s"] + 60)

    data = client.get("/loops/?json").json()
    assert data["stalled"] == ["monitor"]
    assert [loop["name"] for loop in data["loops"] if loop["stalled"]] == ["monitor"]

    page = client.get("/loops/").content.decode()
    assert 'class="loop-strip loops-stalled"' in page
    assert "Loops stalled: monitor" in page
    row = page.split('id="loop-monitor"')[1].split("</tr>")[0]
    assert "stalled" in row
    assert 'class="badge alert"' in row
    assert 'id="loop-rollup" class=""' in page  # the others stay normal

    # The dashboard: the strip on the page, the same data in its ?json.
    dash = client.get("/dash/").content.decode()
    assert "Loops stalled: monitor" in dash
    assert client.get("/dash/?json").json()["loops"]["stalled"] == ["monitor"]
    assert (
        "Loops stalled: monitor" in client.get("/dash/", HTTP_HX_REQUEST="true").content.decode()
    )  # its refresh

    # Every other page's header loads the strip by htmx: the fragment alone, stalled and red.
    assert 'hx-get="/loops/"' in client.get("/jobs/").content.decode()
    fragment = client.get("/loops/", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="loop-strip" class="loop-strip loops-stalled"')
    assert "<table" not in fragment
    assert "monitor stalled" in fragment

    # The loop runs again: the strip is normal.
    assert loop_named("monitor").run() is not None
    assert client.get("/loops/?json").json()["stalled"] == []
    assert "Loops running" in client.get("/loops/", HTTP_HX_REQUEST="true").content.decode()


def test_a_failed_last_run_shows_its_error_without_stalling(client, fresh_loops) -> None:
    row = LoopStatus.objects.get(name="campaigns")
    row.error = "RuntimeError: <catalog> unreachable"
    row.save()
    data = client.get("/loops/?json").json()
    campaigns = next(loop for loop in data["loops"] if loop["name"] == "campaigns")
    assert campaigns["error"] == "RuntimeError: <catalog> unreachable"
    assert campaigns["stalled"] is False
    page = client.get("/loops/").content.decode()
    assert "last run failed" in page
    assert "RuntimeError: &lt;catalog&gt; unreachable" in page  # escaped


def test_a_loop_that_never_ran_is_stalled_after_the_grace(client, fresh_loops, settings, monkeypatch) -> None:
    from core import loop_health

    LoopStatus.objects.filter(name="janitor").delete()
    data = client.get("/loops/?json").json()
    janitor = next(loop for loop in data["loops"] if loop["name"] == "janitor")
    assert janitor["succeeded_at"] is None
    assert janitor["finished_at"] is None
    assert janitor["stalled"] is False  # this process has not been up for three hours

    old_start = timezone.now() - dt.timedelta(seconds=settings.AILURO_LOOPS["janitor"]["max_lag_s"] + 400)
    monkeypatch.setattr(loop_health, "PROCESS_STARTED_AT", old_start)
    assert client.get("/loops/?json").json()["stalled"] == ["janitor"]
    assert "janitor stalled never" in client.get("/loops/", HTTP_HX_REQUEST="true").content.decode()
