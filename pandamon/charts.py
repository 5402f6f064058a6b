"""Plotly figure dicts built from plain data: no ORM, no I/O, unit-tested alone.

The page embeds a figure with `json_script` and `static/js/pandamon.js` draws it with the vendored
plotly.js. State colours are the ones of `static/css/ailuro.css`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from math import floor, log10
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


_HOUR_MS = 3_600_000


def stacked_over_time(
    points: Iterable[tuple[datetime, str, int]],
    *,
    title: str,
    colours: Mapping[str, str] | None = None,
    unit: str | None = None,
    bin_hours: int | None = None,
) -> dict[str, Any]:
    """(bucket, series, count) triples → a stacked bar chart, one trace per series.

    With `unit` ('hour' or 'day': the grain of the buckets, which are date_trunc'd UTC) the buckets
    merge into bins of `bin_hours` (default one bucket) aligned on UTC midnight, and each bar spans
    exactly its bin [start, end), which the hover names in UTC: one failure in a 3-hour bin is drawn
    as one bar 3 hours wide, labelled with those 3 hours. Without it plotly takes the width from the
    smallest gap between buckets and centres bars on them (and draws a single bucket one
    millisecond wide)."""
    hours = bin_hours or (24 if unit == "day" else 1)
    if unit is not None and (24 % hours if hours < 24 else hours % 24):
        raise ValueError(f"bins of {hours} hours do not align on UTC midnight")
    series: dict[str, dict[datetime, int]] = defaultdict(dict)
    for bucket, name, n in points:
        start = time_bin_start(bucket, hours) if unit is not None else bucket
        series[name][start] = series[name].get(start, 0) + n
    order = [s for s in JobStatus.values if s in series] + sorted(
        s for s in series if s not in JobStatus.values
    )
    width = timedelta(hours=hours)
    data = []
    for i, name in enumerate(order):
        xs = sorted(series[name])
        colour = (colours or STATE_COLOURS).get(name, _PALETTE[i % len(_PALETTE)])
        trace: dict[str, Any] = {
            "type": "bar",
            "name": name,
            "x": [_utc(x) for x in xs],
            "y": [series[name][x] for x in xs],
            "marker": {"color": colour},
        }
        if unit is not None:
            trace |= {
                "width": hours * _HOUR_MS,
                "offset": 0,
                "customdata": [[_utc(x, minutes=True), _utc(x + width, minutes=True)] for x in xs],
                "hovertemplate": "%{fullData.name}: %{y}<br>[%{customdata[0]}, %{customdata[1]}) UTC<extra></extra>",
            }
        data.append(trace)
    layout: dict[str, Any] = {**_LAYOUT, "barmode": "stack", "title": {"text": title}}
    if unit is not None:
        layout["xaxis"] = {"title": {"text": "UTC"}, "type": "date"}
        layout["bargap"] = 0
    return {"data": data, "layout": layout}


def time_bin_start(bucket: datetime, hours: int) -> datetime:
    """The start of the `hours`-wide bin holding a bucket: bins align on UTC midnight."""
    if bucket.tzinfo is not None:
        bucket = bucket.astimezone(UTC)
    if hours >= 24:
        return bucket.replace(hour=0, minute=0, second=0, microsecond=0)
    return bucket.replace(hour=bucket.hour // hours * hours, minute=0, second=0, microsecond=0)


def _utc(t: datetime, *, minutes: bool = False) -> str:
    """A UTC time as plotly reads it on a date axis (no offset: plotly would not convert it)."""
    t = t.astimezone(UTC) if t.tzinfo else t
    return t.strftime("%Y-%m-%d %H:%M" if minutes else "%Y-%m-%d %H:%M:%S")


def nice_width(span: Fraction | int, *, target: int = 20, finest: Fraction | int = 1) -> Fraction:
    """The bin width for values spreading over `span`: the smallest 1, 2 or 5 × 10^k that is at
    least span / target (so at most target + 1 bins) and at least `finest`."""
    raw = Fraction(span) / target
    if raw <= finest:
        return Fraction(finest)
    step = Fraction(10) ** (floor(log10(raw)) - 1)
    while True:
        for m in (1, 2, 5):
            if m * step >= raw:
                return m * step
        step *= 10


def grain(request: Fraction, *, finest: Fraction | int) -> Fraction:
    """The grain a histogram's scan counts by: the largest power of ten at most request / 100, and
    at least `finest` (itself a power of ten), so every `nice_width` of at least it is a multiple
    of it."""
    step = Fraction(finest)
    while step * 10 * 100 <= request:
        step *= 10
    return step


def bin_counts(values: Iterable[int], width: int) -> dict[int, int]:
    """Values (whole base units: seconds, kB) by bin index ⌊value / width⌋: bin i is
    [i × width, (i + 1) × width)."""
    counts: dict[int, int] = defaultdict(int)
    for v in values:
        counts[v // width] += 1
    return dict(counts)


def bins_with_edges(counts: Mapping[int, int], width: int, per_unit: int) -> list[tuple[float, float, int]]:
    """Bin counts → (lo, hi, count) in the display unit (base units / `per_unit`), every bin from
    the lowest to the highest present (empty ones as 0), so the bars tile the data range."""
    if not counts:
        return []
    return [
        (_edge(i * width, per_unit), _edge((i + 1) * width, per_unit), int(counts.get(i, 0)))
        for i in range(min(counts), max(counts) + 1)
    ]


def _edge(base: int, per_unit: int) -> float:
    """An edge in the display unit; the widths are 1/2/5 × 10^k of it, so six decimals are exact."""
    return round(float(Fraction(base, per_unit)), 6)


def histogram_bins(
    fine: Mapping[int, int], grain: int, per_unit: int, *, target: int = 20
) -> list[tuple[float, float, int]]:
    """Counts by fine bin (index ⌊value / grain⌋ of values in whole base units) → (lo, hi, count)
    bins in the display unit (`per_unit` base units), sized to the data range: a `nice_width` of
    at most `target` bins, never finer than the grain. Each nice width is a multiple of the grain,
    so every fine bin falls in exactly one bin and a value v lands in the bin with lo ≤ v < hi."""
    if not fine:
        return []
    span = Fraction((max(fine) - min(fine) + 1) * grain, per_unit)
    width = nice_width(span, target=target, finest=Fraction(grain, per_unit)) * per_unit
    if width.denominator != 1 or width % grain:
        raise ValueError(f"bin width {width} is not a multiple of the grain {grain}")
    coarse: dict[int, int] = defaultdict(int)
    for i, n in fine.items():
        coarse[(i * grain) // int(width)] += n
    return bins_with_edges(coarse, int(width), per_unit)


def histogram(
    bins: Sequence[tuple[float, float, int]], *, title: str, x_title: str, colour: str
) -> dict[str, Any]:
    """(lo, hi, count) bins → a bar chart, each bar spanning exactly [lo, hi), the hover naming its
    edges. The binning ran in the query (`bins_with_edges`)."""
    return {
        "data": [
            {
                "type": "bar",
                "x": [lo for lo, _, _ in bins],
                "y": [n for _, _, n in bins],
                "width": [hi - lo for lo, hi, _ in bins],
                "offset": 0,
                "customdata": [[_num(lo), _num(hi)] for lo, hi, _ in bins],
                "hovertemplate": f"[%{{customdata[0]}}, %{{customdata[1]}}) {x_title}: %{{y}} jobs<extra></extra>",
                "marker": {"color": colour, "line": {"color": "#fff", "width": 1}},
                "name": x_title,
            }
        ],
        "layout": {
            **_LAYOUT,
            "title": {"text": title},
            "xaxis": {"title": {"text": f"{x_title} (bin [lo, hi))"}},
            "bargap": 0,
        },
    }


def _num(x: float) -> str:
    """An edge as its shortest text: 2, 2.5, 0.1, 1200."""
    return f"{x:.6f}".rstrip("0").rstrip(".")


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
