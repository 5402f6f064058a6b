"""The charts as the pages embed them: time bins sized to the window with exact-width bars and
their UTC edges, task histograms with [lo, hi) bars whose edges contain the values."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any

import pytest

from dispatcher.models import Job
from dispatcher.states import JobStatus
from tests.pandamon.conftest import World

pytestmark = pytest.mark.django_db

HOUR_MS = 3_600_000


def figure(page: str, element_id: str) -> dict[str, Any]:
    match = re.search(
        rf'<script type="application/json" data-figure="{element_id}">(.*?)</script>', page, re.S
    )
    assert match, element_id
    return json.loads(match.group(1))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("query", "hours", "label"), [("", 1, "hour"), ("?days=7", 3, "3 hours")])
def test_failures_over_time_are_bins_of_the_width_the_title_states(
    client: Any, world: World, query: str, hours: int, label: str
) -> None:
    page = client.get(f"/errors/{query}").content.decode()
    fig = figure(page, "errors-over-time")
    assert f"per {label} (UTC)" in fig["layout"]["title"]["text"]
    assert fig["data"], "the world has failed attempts in the window"
    for trace in fig["data"]:
        assert trace["width"] == hours * HOUR_MS and trace["offset"] == 0
        for x, (start, end) in zip(trace["x"], trace["customdata"], strict=True):
            assert x.startswith(start)
            assert int(start[11:13]) % hours == 0  # aligned on UTC midnight
            span = int(end[11:13] or 0) - int(start[11:13])
            assert span % 24 == hours % 24
    data = client.get(f"/errors/{query}{'&' if query else '?'}json").json()
    assert (data["over_time_unit"], data["chart_bin_hours"]) == ("hour", hours)
    total = sum(n for t in fig["data"] for n in t["y"])
    assert total == sum(n for _, _, n in data["over_time"])


def test_task_histograms_draw_each_bar_over_its_real_edges(client: Any, world: World) -> None:
    task = world.tasks["isr"]
    page = client.get(f"/task/{task.jeditaskid}/").content.decode()
    (rss,) = figure(page, "rss-hist")["data"]
    ended = Job.objects.filter(task=task, jobstatus__in=[JobStatus.FINISHED, JobStatus.FAILED])
    values = [Fraction(kb, 1024) for kb in ended.values_list("max_rss_kb", flat=True) if kb is not None]
    assert sum(rss["y"]) == len(values)
    for lo, w, (lo_text, hi_text) in zip(rss["x"], rss["width"], rss["customdata"], strict=True):
        assert Fraction(lo_text) == Fraction(str(lo)) and Fraction(hi_text) == Fraction(str(lo)) + Fraction(
            str(w)
        )
    for v in values:
        assert (
            sum(1 for lo_text, hi_text in rss["customdata"] if Fraction(lo_text) <= v < Fraction(hi_text))
            == 1
        )
