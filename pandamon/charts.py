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


def dag_figure(
    nodes: Sequence[Mapping[str, Any]],
    positions: Mapping[Any, tuple[float, float]],
    edges: Sequence[tuple[Any, Any]],
    *,
    title: str,
    marker_size: int = 28,
    final_edges: Sequence[tuple[Any, Any]] = (),
) -> dict[str, Any]:
    """A layered DAG: one line trace for all edges, one marker trace per state (so the legend is
    the colour key). Each node carries its link in `customdata`; pandamon.js opens it on click.

    nodes: {"id", "state", "text", "url"} and optionally "final" (a final job, or a task holding
    one: drawn as a diamond); positions: id → (x, y) from `dag.layered_layout`. `final_edges` are
    drawn dashed, in a trace of their own whose legend entry explains them.
    """
    ex: list[float | None] = []
    ey: list[float | None] = []
    for a, b in edges:
        if a in positions and b in positions:
            (x0, y0), (x1, y1) = positions[a], positions[b]
            ex += [x0, x1, None]
            ey += [y0, y1, None]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": ex,
            "y": ey,
            "line": {"color": "#b8c2cc", "width": 1},
            "hoverinfo": "skip",
            "showlegend": False,
        }
    ]
    fx: list[float | None] = []
    fy: list[float | None] = []
    for a, b in final_edges:
        if a in positions and b in positions:
            (x0, y0), (x1, y1) = positions[a], positions[b]
            fx += [x0, x1, None]
            fy += [y0, y1, None]
    if any(node.get("final") for node in nodes):
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "◆ final job: runs after every other job has ended",
                "x": fx,
                "y": fy,
                "line": {"color": "#8a94a3", "width": 1, "dash": "dash"},
                "hoverinfo": "skip",
                "showlegend": True,
            }
        )
    by_state: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for node in nodes:
        by_state[node["state"]].append(node)
    for state in [s for s in STATE_COLOURS if s in by_state] + sorted(set(by_state) - set(STATE_COLOURS)):
        group = by_state[state]
        data.append(
            {
                "type": "scatter",
                "mode": "markers+text" if len(nodes) <= 60 else "markers",
                "name": state,
                "x": [positions[n["id"]][0] for n in group],
                "y": [positions[n["id"]][1] for n in group],
                "text": [n["text"] for n in group],
                "textposition": "bottom center",
                "hovertext": [n["text"] for n in group],
                "hoverinfo": "text",
                "customdata": [n["url"] for n in group],
                "marker": {
                    "color": STATE_COLOURS.get(state, "#65707e"),
                    "size": marker_size,
                    "symbol": ["diamond" if n.get("final") else "circle" for n in group],
                    "line": {"color": "#1d2430", "width": 1},
                },
            }
        )
    return {
        "data": data,
        "layout": {
            **_LAYOUT,
            "height": 480,
            "title": {"text": title},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False, "autorange": "reversed"},
            "hovermode": "closest",
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
