"""The payloads `static/js/dag.js` draws: a DAG (boxes and arrows, laid out in the browser by the
vendored dagre) and a workflow timeline (labels × time, one bar per attempt). Plain data in and
out: no ORM, no I/O, unit-tested alone.

A DAG payload is {"kind", "nodes", "edges", "final_edges", "colours", "states"}. A node is
{"id", "title", "text" (one line saying what it holds), "state" (the colour of the whole node:
failed as soon as one job failed, finished only when all did), "url", "counts" (state → jobs),
"total", "final"}.
Edges are [parent id, child id]; `final_edges` are the dashed "after everything" edges of final jobs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dispatcher.states import JobStatus
from pandamon.charts import STATE_COLOURS, dominant_state

Edge = tuple[Any, Any]


# The most jobs a view draws one box each (`cap`'s maximum): dagre lays out 500 nodes in about a
# second in the reader's browser and 3,000 in minutes (docs/performance.md, decision 0011).
MAX_JOB_BOXES = 1000


def final_edges(
    nodes: Iterable[Any], edges: Iterable[Edge], finals: set[Any], sinks: set[Any] | None = None
) -> list[Edge]:
    """Dashed edges of final jobs: from every sink (no parent of anything, not final) to every final
    node. A final job has no edges of its own; these say "runs after all of these have ended".
    `sinks` narrows the sinks to those known to be sinks of the whole workflow (a partial view
    cannot tell from its own edges alone)."""
    parents = {a for a, _ in edges}
    out = [n for n in nodes if n not in parents and n not in finals and (sinks is None or n in sinks)]
    return [(sink, final) for final in sorted(finals) for sink in out]


def _payload(
    kind: str, nodes: list[dict[str, Any]], edges: Iterable[Edge], dashed: Iterable[Edge]
) -> dict[str, Any]:
    ids = {n["id"] for n in nodes}
    return {
        "kind": kind,
        "nodes": nodes,
        "edges": [[a, b] for a, b in edges if a in ids and b in ids],
        "final_edges": [[a, b] for a, b in dashed if a in ids and b in ids],
        "colours": STATE_COLOURS,
        "states": list(JobStatus.values),
    }


def task_graph(
    tasks: Sequence[Mapping[str, Any]],
    counts: Mapping[Any, Mapping[str, int]],
    edges: Sequence[Edge],
    dashed: Sequence[Edge],
    *,
    url: Callable[[Any], str],
) -> dict[str, Any]:
    """One box per task: its label, total, counts by state; `tasks` are {"id", "label", "final"}."""
    nodes = []
    for t in tasks:
        c = {s: int(n) for s, n in counts.get(t["id"], {}).items() if n}
        nodes.append(
            {
                "id": t["id"],
                "title": t["label"],
                "text": f"{t['label']}: {c.get('finished', 0)}/{sum(c.values())} done, {c.get('failed', 0)} failed",
                "state": dominant_state(c),
                "url": url(t["id"]),
                "counts": c,
                "total": sum(c.values()),
                "final": bool(t.get("final")),
            }
        )
    return _payload("task", nodes, edges, dashed)


def job_graph(
    jobs: Sequence[Mapping[str, Any]],
    edges: Sequence[Edge],
    dashed: Sequence[Edge],
    *,
    url: Callable[[Any], str],
    cap: int,
    focus: Any = None,
    label_url: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """One box per job; above `cap` jobs, one box per label instead (counts by state, edges between
    labels with the number of job edges they stand for), so thousands of jobs stay readable."""
    if len(jobs) > cap:
        return collapsed_by_label(jobs, [*edges], [*dashed], url=label_url)
    nodes = [
        {
            "id": j["pandaid"],
            "title": f"{j['pandaid']} {j['name']}",
            "text": f"{j['pandaid']} {j['name']}" + (" (final)" if j.get("is_final") else ""),
            "url": url(j["pandaid"]),
            "counts": {j["jobstatus"]: 1},
            "total": 1,
            "state": j["jobstatus"],
            "label": j["label"],
            "final": bool(j.get("is_final")),
            **({"focus": True} if j["pandaid"] == focus else {}),
        }
        for j in jobs
    ]
    return _payload("job", nodes, edges, dashed)


def collapsed_by_label(
    jobs: Sequence[Mapping[str, Any]],
    edges: Sequence[Edge],
    dashed: Sequence[Edge],
    *,
    url: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    label_of = {j["pandaid"]: j["label"] for j in jobs}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    finals: set[str] = set()
    for j in jobs:
        counts[j["label"]][j["jobstatus"]] += 1
        if j.get("is_final"):
            finals.add(j["label"])
    nodes = [
        {
            "id": label,
            "title": label,
            "text": f"{label}: {sum(c.values())} jobs",
            "state": dominant_state(c),
            "url": url(label) if url else "",
            "counts": dict(c),
            "total": sum(c.values()),
            "final": label in finals,
        }
        for label, c in sorted(counts.items())
    ]

    def between(pairs: Sequence[Edge]) -> list[Edge]:
        weight = Counter(
            (label_of[a], label_of[b])
            for a, b in pairs
            if a in label_of and b in label_of and label_of[a] != label_of[b]
        )
        return sorted(weight)

    payload = _payload(
        "label", nodes, between(edges), [e for e in between(dashed) if e not in set(between(edges))]
    )
    payload["collapsed_jobs"] = len(jobs)
    return payload


def timeline(
    attempts: Sequence[Mapping[str, Any]], *, labels: Sequence[str], truncated: bool, cap: int
) -> dict[str, Any]:
    """Rows = labels (in the order given, then any other), one bar per attempt from its start to its
    end, coloured by the attempt's outcome state. An attempt still running has no end (None): the
    browser draws it up to its own clock, so the payload stays the same between two reads."""
    rows = list(labels) + sorted({a["label"] for a in attempts} - set(labels))
    row_of = {label: i for i, label in enumerate(rows)}
    starts: list[datetime] = [a["start"] for a in attempts]
    ends: list[datetime] = [a["end"] or a["start"] for a in attempts]
    return {
        "rows": rows,
        "start": min(starts).isoformat() if starts else None,
        "end": max(ends).isoformat() if ends else None,
        "bars": [
            {
                "row": row_of[a["label"]],
                "pandaid": a["pandaid"],
                "attemptnr": a["attemptnr"],
                "state": a["state"],
                "start": a["start"].isoformat(),
                "end": a["end"].isoformat() if a["end"] else None,
            }
            for a in attempts
        ],
        "colours": STATE_COLOURS,
        "truncated": truncated,
        "cap": cap,
    }
