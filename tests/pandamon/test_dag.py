"""The layered DAG layout: parents left of children, no overlaps, fast on thousands of nodes."""

from __future__ import annotations

import time

from pandamon.dag import layered_layout, layers_of


def test_layers_are_longest_paths_from_the_roots() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("d", "c")]
    assert layers_of(["a", "b", "c", "d"], edges) == {"a": 0, "b": 1, "c": 2, "d": 0}


def test_every_edge_points_right_and_no_two_nodes_share_a_position() -> None:
    nodes = list(range(30))
    edges = [(i, i + 10) for i in range(20)] + [(i, 25) for i in range(10, 20)]
    pos = layered_layout(nodes, edges)
    assert all(pos[a][0] < pos[b][0] for a, b in edges)
    assert len(set(pos.values())) == len(nodes)


def test_a_cycle_or_a_dangling_edge_does_not_hang_the_layout() -> None:
    pos = layered_layout(["a", "b"], [("a", "b"), ("b", "a"), ("a", "zzz")])
    assert set(pos) == {"a", "b"}


def test_five_thousand_nodes_lay_out_in_well_under_a_second() -> None:
    n = 5000
    nodes = list(range(n))
    edges = [(i, i + 1000) for i in range(n - 1000)] + [(i, (i // 4) + 4000) for i in range(1000, 2000)]
    start = time.perf_counter()
    pos = layered_layout(nodes, edges)
    assert time.perf_counter() - start < 1.0
    assert len(pos) == n
