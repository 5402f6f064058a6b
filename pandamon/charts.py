"""Plotly figure dicts built from plain data: no ORM, no I/O, unit-tested alone.

The page embeds a figure with `json_script` and `static/js/pandamon.js` draws it with the vendored
plotly.js. State colours are the ones of `static/css/ailuro.css`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dispatcher.states import JobStatus

STATE_COLOURS: dict[str, str] = {
    "defined": "#9aa5b1",
    "activated": "#5b8def",
    "sent": "#7c6cf0",
    "starting": "#a070e0",
    "running": "#2e9e5b",
    "holding": "#d8a300",
    "finished": "#1f7a3d",
    "failed": "#c62828",
    "cancelled": "#6d4c41",
    "closed": "#8d6e63",
    "pruned": "#e07b39",
}
_PALETTE = ("#c62828", "#5b8def", "#d8a300", "#7c6cf0", "#e07b39", "#2e9e5b", "#6d4c41", "#a070e0", "#00838f")
_LAYOUT: dict[str, Any] = {
    "margin": {"l": 50, "r": 10, "t": 30, "b": 40},
    "height": 260,
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "plot_bgcolor": "#fff",
    "paper_bgcolor": "#fff",
    "legend": {"orientation": "h", "y": -0.2},
}


def ordered_states(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts in the state machine's order, every state present (zeros included)."""
    return {state: int(counts.get(state, 0)) for state in JobStatus.values}


# Bucket widths in milliseconds (plotly's unit on a date axis).
_BUCKET_MS = {"hour": 3_600_000, "day": 86_400_000}


def stacked_over_time(
    points: Iterable[tuple[datetime, str, int]],
    *,
    title: str,
    colours: Mapping[str, str] | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """(bucket, series, count) triples → a stacked bar chart, one trace per series.

    With `unit` each bar covers 90 % of its bucket, from its start (buckets are date_trunc'd):
    plotly otherwise takes the width from the smallest gap between buckets and centres bars on
    the bucket start, and with a single bucket (a fresh embedded run) draws a bar one millisecond
    wide on an axis of microseconds."""
    series: dict[str, dict[datetime, int]] = defaultdict(dict)
    for bucket, name, n in points:
        series[name][bucket] = series[name].get(bucket, 0) + n
    order = [s for s in JobStatus.values if s in series] + sorted(
        s for s in series if s not in JobStatus.values
    )
    data = []
    for i, name in enumerate(order):
        xs = sorted(series[name])
        colour = (colours or STATE_COLOURS).get(name, _PALETTE[i % len(_PALETTE)])
        data.append(
            {
                "type": "bar",
                "name": name,
                "x": [x.isoformat() for x in xs],
                "y": [series[name][x] for x in xs],
                "marker": {"color": colour},
                **({"width": 0.9 * _BUCKET_MS[unit], "offset": 0.05 * _BUCKET_MS[unit]} if unit else {}),
            }
        )
    return {"data": data, "layout": {**_LAYOUT, "barmode": "stack", "title": {"text": title}}}


def histogram(bins: Sequence[tuple[float, int]], *, title: str, x_title: str, colour: str) -> dict[str, Any]:
    """Pre-binned (bin centre, count) pairs → a bar chart (the binning ran in SQL)."""
    return {
        "data": [
            {
                "type": "bar",
                "x": [b for b, _ in bins],
                "y": [n for _, n in bins],
                "marker": {"color": colour},
                "name": x_title,
            }
        ],
        "layout": {
            **_LAYOUT,
            "title": {"text": title},
            "xaxis": {"title": {"text": x_title}},
            "bargap": 0.05,
        },
    }


def dominant_state(counts: Mapping[str, int]) -> str:
    """The state that colours a task node: failed if any failed, else the most advanced state."""
    if counts.get("failed"):
        return "failed"
    total = sum(counts.values())
    if total and counts.get("finished", 0) == total:
        return "finished"
    for state in ("running", "starting", "sent", "holding", "activated", "pruned", "cancelled", "defined"):
        if counts.get(state):
            return state
    return "finished" if counts.get("finished") else "defined"
