"""Layered layout of a DAG (Sugiyama-style, simplified), pure and fast enough for 10k nodes.

1. Layer = longest path from a root (parents always in an earlier layer).
2. Order within a layer by the barycentre of the parents' positions, a few downward sweeps, which
   removes most crossings on the regular graphs of pipelines.
3. x = layer, y = position in the layer, centred so that layers of different widths line up.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Hashable, Iterable, Sequence


def layers_of(nodes: Sequence[Hashable], edges: Iterable[tuple[Hashable, Hashable]]) -> dict[Hashable, int]:
    """Longest-path layering (Kahn order). Nodes on a cycle — never in a valid workflow — and
    edges to unknown nodes are ignored rather than looping."""
    known = set(nodes)
    parents: dict[Hashable, list[Hashable]] = defaultdict(list)
    children: dict[Hashable, list[Hashable]] = defaultdict(list)
    indegree = dict.fromkeys(nodes, 0)
    for a, b in edges:
        if a in known and b in known and a != b:
            parents[b].append(a)
            children[a].append(b)
            indegree[b] += 1
    layer = dict.fromkeys(nodes, 0)
    ready = deque(n for n in nodes if indegree[n] == 0)
    while ready:
        node = ready.popleft()
        for child in children[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return layer


def layered_layout(
    nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]], *, sweeps: int = 3
) -> dict[Hashable, tuple[float, float]]:
    layer = layers_of(nodes, edges)
    columns: dict[int, list[Hashable]] = defaultdict(list)
    for node in nodes:
        columns[layer[node]].append(node)
    parents: dict[Hashable, list[Hashable]] = defaultdict(list)
    for a, b in edges:
        if a in layer and b in layer:
            parents[b].append(a)
    position: dict[Hashable, float] = {}
    for index in sorted(columns):
        for i, node in enumerate(columns[index]):
            position[node] = float(i)
    for _ in range(sweeps):
        for index in sorted(columns)[1:]:
            column = columns[index]

            def centre(node: Hashable) -> float:
                ps = parents.get(node)
                return sum(position[p] for p in ps) / len(ps) if ps else position[node]

            column.sort(key=centre)
            for i, node in enumerate(column):
                position[node] = float(i)
    tallest = max((len(c) for c in columns.values()), default=1)
    result: dict[Hashable, tuple[float, float]] = {}
    for index, column in columns.items():
        offset = (tallest - len(column)) / 2
        for i, node in enumerate(column):
            result[node] = (float(index), i + offset)
    return result
