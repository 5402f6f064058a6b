"""Chart builders: plain data in, plotly figure dicts out, state colours everywhere."""

from __future__ import annotations

from datetime import UTC, datetime

from pandamon.charts import (
    STATE_COLOURS,
    dominant_state,
    histogram,
    ordered_states,
    stacked_over_time,
)

T1 = datetime(2026, 11, 22, 1, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 2, tzinfo=UTC)


def test_states_over_time_stack_one_trace_per_state_in_state_order_with_state_colours() -> None:
    fig = stacked_over_time([(T2, "failed", 2), (T1, "finished", 5), (T2, "finished", 7)], title="x")
    assert [t["name"] for t in fig["data"]] == ["finished", "failed"]
    assert fig["data"][0]["x"] == [T1.isoformat(), T2.isoformat()]
    assert fig["data"][0]["y"] == [5, 7]
    assert fig["data"][1]["marker"]["color"] == STATE_COLOURS["failed"]
    assert fig["layout"]["barmode"] == "stack"


def test_a_single_bucket_is_drawn_as_wide_as_its_hour_not_a_millisecond() -> None:
    fig = stacked_over_time([(T1, "failed", 1)], title="x", unit="hour")
    assert fig["data"][0]["width"] == 0.9 * 3_600_000
    assert fig["data"][0]["offset"] == 0.05 * 3_600_000  # the bar starts in its own hour
    assert "width" not in stacked_over_time([(T1, "failed", 1)], title="x")["data"][0]


def test_histogram_keeps_the_bins_it_is_given() -> None:
    fig = histogram([(1.5, 3), (4.5, 1)], title="Walltime", x_title="minutes", colour="#000")
    assert fig["data"][0]["x"] == [1.5, 4.5]
    assert fig["data"][0]["y"] == [3, 1]


def test_a_task_node_is_red_when_any_job_failed_and_green_only_when_all_finished() -> None:
    assert dominant_state({"finished": 9, "failed": 1}) == "failed"
    assert dominant_state({"finished": 10}) == "finished"
    assert dominant_state({"finished": 5, "running": 5}) == "running"
    assert dominant_state({}) == "defined"


def test_ordered_states_lists_every_state_once() -> None:
    assert list(ordered_states({"failed": 1})) == list(STATE_COLOURS)
