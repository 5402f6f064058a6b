"""Chart builders: plain data in, plotly figure dicts out, state colours everywhere."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pandamon.charts import (
    STATE_COLOURS,
    bin_counts,
    dominant_state,
    grain,
    histogram,
    histogram_bins,
    nice_width,
    ordered_states,
    stacked_over_time,
)
from pandamon.queries.common import time_bin

T1 = datetime(2026, 11, 22, 1, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 2, tzinfo=UTC)


def test_states_over_time_stack_one_trace_per_state_in_state_order_with_state_colours() -> None:
    fig = stacked_over_time([(T2, "failed", 2), (T1, "finished", 5), (T2, "finished", 7)], title="x")
    assert [t["name"] for t in fig["data"]] == ["finished", "failed"]
    assert fig["data"][0]["x"] == ["2026-11-22 01:00:00", "2026-11-22 02:00:00"]
    assert fig["data"][0]["y"] == [5, 7]
    assert fig["data"][1]["marker"]["color"] == STATE_COLOURS["failed"]
    assert fig["layout"]["barmode"] == "stack"


def test_a_single_failure_is_one_bar_exactly_as_wide_as_its_bin_with_its_edges_in_the_hover() -> None:
    fig = stacked_over_time([(T1, "failed", 1)], title="x", unit="hour")
    (trace,) = fig["data"]
    assert trace["width"] == 3_600_000 and trace["offset"] == 0  # [01:00, 02:00), not centred on 01:00
    assert trace["x"] == ["2026-11-22 01:00:00"]
    assert trace["customdata"] == [["2026-11-22 01:00", "2026-11-22 02:00"]]
    assert "UTC" in trace["hovertemplate"]
    assert "width" not in stacked_over_time([(T1, "failed", 1)], title="x")["data"][0]


def test_hour_buckets_merge_into_bins_aligned_on_utc_midnight() -> None:
    points = [(datetime(2026, 11, 22, h, tzinfo=UTC), "failed", 1) for h in (0, 2, 3, 5, 23)]
    (trace,) = stacked_over_time(points, title="x", unit="hour", bin_hours=3)["data"]
    assert trace["x"] == ["2026-11-22 00:00:00", "2026-11-22 03:00:00", "2026-11-22 21:00:00"]
    assert trace["y"] == [2, 2, 1]
    assert trace["width"] == 3 * 3_600_000
    assert trace["customdata"][2] == ["2026-11-22 21:00", "2026-11-23 00:00"]
    (day,) = stacked_over_time(points, title="x", unit="day")["data"]
    assert day["y"] == [5] and day["width"] == 24 * 3_600_000


@pytest.mark.parametrize(
    ("window", "unit", "hours", "label"),
    [
        (timedelta(hours=12), "hour", 1, "hour"),
        (timedelta(days=3), "hour", 2, "2 hours"),
        (timedelta(days=7), "hour", 3, "3 hours"),
        (timedelta(days=30), "hour", 12, "12 hours"),
        (timedelta(days=90), "day", 24, "day"),
    ],
)
def test_time_bins_are_sized_to_the_window(window: timedelta, unit: str, hours: int, label: str) -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    tb = time_bin(now - window, None, now)
    assert (tb.unit, tb.hours, tb.label) == (unit, hours, label)
    assert unit == "day" or window / timedelta(hours=hours) <= 64


def test_histogram_bars_span_their_bins_with_the_edges_in_the_hover() -> None:
    fig = histogram([(2.0, 3.0, 3), (3.0, 4.0, 1)], title="Peak RSS", x_title="MB", colour="#000")
    (trace,) = fig["data"]
    assert trace["x"] == [2.0, 3.0] and trace["width"] == [1.0, 1.0] and trace["offset"] == 0
    assert trace["y"] == [3, 1]
    assert trace["customdata"] == [["2", "3"], ["3", "4"]]


def test_a_2_mb_job_lands_in_a_bin_whose_edges_contain_2_mb() -> None:
    kb = [2 * 1024, 2 * 1024 + 10, 1_000 * 1024]  # two small jobs and one of ~1 GB
    bins = histogram_bins(bin_counts(kb, 1024), 1024, 1024)
    small = next(b for b in bins if b[2])
    assert small[0] <= 2 < small[1]
    assert small[2] == 2
    assert sum(n for _, _, n in bins) == 3
    assert len(bins) <= 21
    # Alone, it is one bin of the finest width, [2, 3) MB.
    assert histogram_bins(bin_counts([2 * 1024], 1024), 1024, 1024) == [(2.0, 3.0, 1)]


@pytest.mark.parametrize(
    ("span", "finest", "width"),
    [(0, 1, 1), (20, 1, 1), (21, 1, 2), (100, 1, 5), (1000, 1, 50), (3, Fraction(1, 10), Fraction(1, 5))],
)
def test_nice_widths_are_1_2_or_5_times_a_power_of_ten(
    span: int, finest: Fraction | int, width: Fraction
) -> None:
    assert nice_width(span, finest=finest) == width


@settings(max_examples=300, deadline=None)
@given(
    # Values over every scale, from a few seconds or kB to 10^9.
    values=st.integers(1, 9).flatmap(lambda e: st.lists(st.integers(0, 10**e), min_size=1, max_size=200)),
    # (grain, base units per display unit): minutes by 0.1, 1 and 10; MB by 1, 10 and 100.
    unit=st.sampled_from([(6, 60), (60, 60), (600, 60), (1024, 1024), (10240, 1024), (102400, 1024)]),
)
def test_every_value_lands_in_the_bin_whose_labelled_edges_contain_it(
    values: list[int], unit: tuple[int, int]
) -> None:
    grain, per_unit = unit
    bins = histogram_bins(bin_counts(values, grain), grain, per_unit)
    assert sum(n for _, _, n in bins) == len(values)
    assert len(bins) <= 21
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bins))
    widths = {Fraction(str(hi)) - Fraction(str(lo)) for lo, hi, _ in bins}
    assert len(widths) == 1
    (width,) = widths
    assert any(width == m * Fraction(10) ** k for m in (1, 2, 5) for k in range(-1, 10))
    assert width >= Fraction(grain, per_unit)
    recount = [0] * len(bins)
    for v in values:
        shown = Fraction(v, per_unit)
        (i,) = [i for i, (lo, hi, _) in enumerate(bins) if Fraction(str(lo)) <= shown < Fraction(str(hi))]
        recount[i] += 1
    assert recount == [n for _, _, n in bins]


def test_a_task_node_is_red_when_any_job_failed_and_green_only_when_all_finished() -> None:
    assert dominant_state({"finished": 9, "failed": 1}) == "failed"
    assert dominant_state({"finished": 10}) == "finished"
    assert dominant_state({"finished": 5, "running": 5}) == "running"
    assert dominant_state({}) == "defined"


def test_ordered_states_lists_every_state_once() -> None:
    assert list(ordered_states({"failed": 1})) == list(STATE_COLOURS)


def test_bins_align_on_utc_midnight_whatever_the_buckets_time_zone() -> None:
    paris = timezone(timedelta(hours=1))
    bucket = datetime(2026, 11, 22, 4, tzinfo=paris)  # 03:00 UTC
    (trace,) = stacked_over_time([(bucket, "failed", 1)], title="x", unit="hour", bin_hours=2)["data"]
    assert trace["customdata"] == [["2026-11-22 02:00", "2026-11-22 04:00"]]


@pytest.mark.parametrize(
    ("request_", "finest", "expected"),
    [
        (Fraction(30), Fraction(1, 10), Fraction(1, 10)),  # a 30-minute request: by 6 s
        (Fraction(2880), Fraction(1, 10), Fraction(10)),  # 48 hours: by 10 minutes
        (Fraction(2000), 1, 10),  # 2000 MB: by 10 MB
        (Fraction(100), 1, 1),
        (Fraction(0), 1, 1),
    ],
)
def test_the_scan_grain_is_a_power_of_ten_about_a_hundredth_of_the_request(
    request_: Fraction, finest: Fraction | int, expected: Fraction | int
) -> None:
    assert grain(request_, finest=finest) == expected
