"""A spec's size is computed from the spec before anything is expanded: jobs from the dimensions'
lengths, edges per shared key, rendered text from the templates; over a cap is 413 naming the
field, a too-wide template 400. The arithmetic is checked against the materialised expansion."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from dispatcher.workflows import WorkflowInvalid, spec_load, spec_parse
from dispatcher.workflows.spec_size import (
    LabelShape,
    edge_count,
    intersection_len,
    range_intersection_len,
    range_len,
)
from tests.dispatcher.test_api_workflows import client_for, submit

CAPS = {"max_jobs": 200_000, "max_edges": 2_000_000}


def refused(spec: dict[str, Any], **caps: int) -> WorkflowInvalid:
    with pytest.raises(WorkflowInvalid) as info:
        spec_parse(spec, **{**CAPS, **caps})
    return info.value


def over(**axes: Any) -> dict[str, Any]:
    keys = " ".join(f"{{{k}}}" for k in axes)
    return {"labels": {"x": {"command": f"run {keys}", "over": axes}}}


# --- jobs --------------------------------------------------------------------------------------


def test_a_compact_spec_of_10_to_the_12_jobs_is_413_naming_the_label() -> None:
    spec = {
        "dimensions": {"a": {"range": [0, 10**6]}, "b": {"range": [0, 10**6]}},
        "labels": {"x": {"command": "t {a} {b}", "over": ["a", "b"]}},
    }
    started = time.perf_counter()
    exc = refused(spec)
    assert time.perf_counter() - started < 0.05
    assert exc.status_code == 413
    assert exc.field == "labels.x.over"
    assert "1000000000000 jobs" in exc.message and "limit is 200000" in exc.message


@pytest.mark.parametrize(
    ("bounds", "count"),
    [([0, 10**18], 10**18), ([0, 10**18, 7], -(-(10**18) // 7)), ([2**63 - 1, -(2**63), -1], 2**64 - 1)],
)
def test_huge_ranges_are_counted_not_built(bounds: list[int], count: int) -> None:
    exc = refused(over(i={"range": bounds}))
    assert exc.status_code == 413
    assert exc.field == "labels.x.over"
    assert f"{count} jobs" in exc.message


def test_a_product_of_many_huge_dimensions_is_counted_exactly() -> None:
    axes = {f"d{i}": {"range": [0, 2**62]} for i in range(20)}
    exc = refused(over(**axes))
    assert exc.status_code == 413
    assert f"{2 ** (62 * 20)} jobs" in exc.message


def test_the_total_over_labels_names_the_largest_label() -> None:
    spec = {
        "dimensions": {"a": {"range": [0, 60]}},
        "labels": {
            "x": {"command": "t {a}", "over": ["a"]},
            "y": {"command": "u {a}", "data_ids": [{"a": i} for i in range(70)]},
        },
    }
    exc = refused(spec, max_jobs=100)
    assert (exc.status_code, exc.field) == (413, "labels.y.data_ids")
    assert "130 jobs" in exc.message


def test_range_bounds_must_be_64_bit() -> None:
    exc = refused(over(i={"range": [0, 10**19]}))
    assert (exc.status_code, exc.field) == (400, "labels.x.over.i.range")


def test_a_label_may_not_name_a_dimension_twice() -> None:
    spec = {"dimensions": {"a": [1, 2]}, "labels": {"x": {"command": "t {a}", "over": ["a", "a"]}}}
    exc = refused(spec)
    assert (exc.status_code, exc.field) == (400, "labels.x.over")


# --- edges -------------------------------------------------------------------------------------


def test_an_all_to_all_after_is_refused_by_the_edge_cap_before_wiring() -> None:
    spec = {
        "dimensions": {"a": {"range": [0, 90_000]}, "b": {"range": [0, 90_000]}},
        "labels": {
            "x": {"command": "t {a}", "over": ["a"]},
            "y": {"command": "u {b}", "over": ["b"], "after": ["x"]},
        },
    }
    started = time.perf_counter()
    exc = refused(spec)
    assert time.perf_counter() - started < 0.05
    assert (exc.status_code, exc.field) == (413, "labels.y.after")
    assert "8100000000 dependencies" in exc.message and "AILURO_MAX_DAG_EDGES" in exc.message


def test_edges_over_shared_keys_are_counted_per_key() -> None:
    # x over (a, b), y over (a): every y job gathers the 1000 b's of its a.
    spec = {
        "dimensions": {"a": {"range": [0, 100]}, "b": {"range": [0, 1000]}},
        "labels": {
            "x": {"command": "t {a} {b}", "over": ["a", "b"]},
            "y": {"command": "u {a}", "over": ["a"], "after": ["x"]},
        },
    }
    exc = refused(spec, max_edges=99_999)
    assert (exc.status_code, exc.field) == (413, "labels.y.after")
    assert "100000 dependencies" in exc.message
    assert sum(len(j.parents) for j in spec_parse(spec, **CAPS).jobs) == 100_000


# --- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("run {i:0999999d}", "width of 999999"),
        ("run {i:.100000}", "precision of 100000"),
        ("run {i:>{i}}", "nested template"),
        ("run {i:q}", "not a valid format"),
        ("run {i}" + "x" * 70_000, "renders up to"),
    ],
)
def test_bad_widths_and_giant_templates_are_400_naming_the_field(command: str, words: str) -> None:
    exc = refused({"labels": {"x": {"command": command, "over": {"i": {"range": [0, 3]}}}}})
    assert (exc.status_code, exc.field) == (400, "labels.x.command")
    assert words in exc.message


def test_a_wide_name_template_is_400_naming_the_name() -> None:
    spec = {"labels": {"x": {"command": "t", "name": "x{i:99999}", "over": {"i": [1]}}}}
    assert refused(spec).field == "labels.x.name"


def test_a_template_that_does_not_fit_its_values_is_400() -> None:
    exc = refused({"labels": {"x": {"command": "t {i:d}", "over": {"i": ["a"]}}}})
    assert (exc.status_code, exc.field) == (400, "labels.x.command")


def test_a_data_ids_value_must_be_a_scalar() -> None:
    text = "nest: &n [[1, 2], [3, 4]]\nlabels: {x: {command: 't {k}', data_ids: [{k: *n}]}}\n"
    data = spec_load(text, max_bytes=10**6, max_depth=32)
    data.pop("nest")
    with pytest.raises(WorkflowInvalid) as info:
        spec_parse(data, **CAPS)
    assert (info.value.status_code, info.value.field) == (400, "labels.x.data_ids[0].k")


# --- the arithmetic against the expansion ------------------------------------------------------


steps = st.integers(-4, 4).filter(bool)
small_ranges = st.builds(range, st.integers(-12, 12), st.integers(-12, 12), steps)


@given(
    st.integers(-(10**20), 10**20), st.integers(-(10**20), 10**20), st.integers(-(10**6), 10**6).filter(bool)
)
def test_range_len_is_len_of_the_range(start: int, stop: int, step: int) -> None:
    expected = len(range(start, stop, step)) if abs(stop - start) // abs(step) < 2**62 else None
    if expected is not None:
        assert range_len(start, stop, step) == expected


@given(small_ranges, small_ranges)
def test_range_intersection_is_the_set_intersection(a: range, b: range) -> None:
    assert range_intersection_len(a, b) == len(set(a) & set(b))


values = st.one_of(
    small_ranges,
    st.lists(st.one_of(st.integers(-6, 6), st.sampled_from(["p", "q", "1"])), unique=True, max_size=5),
)


@given(values, values)
def test_dimension_intersection_is_the_set_intersection(a: Any, b: Any) -> None:
    assert intersection_len(a, b) == len(set(a) & set(b))


@st.composite
def label_pair(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], bool, bool]:
    keys = ["k0", "k1", "k2"]
    child_axes = {k: draw(values) for k in draw(st.lists(st.sampled_from(keys), unique=True, max_size=3))}
    parent_axes = {k: draw(values) for k in draw(st.lists(st.sampled_from(keys), unique=True, max_size=3))}
    return child_axes, parent_axes, draw(st.booleans()), draw(st.booleans())


def _ids(axes: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


@settings(max_examples=300)
@given(label_pair())
def test_edge_count_is_the_number_of_matching_pairs(
    pair: tuple[dict[str, Any], dict[str, Any], bool, bool],
) -> None:
    child_axes, parent_axes, child_listed, parent_listed = pair
    child_ids, parent_ids = _ids(child_axes), _ids(parent_axes)
    shared = [k for k in child_axes if k in parent_axes]
    expected = sum(1 for c in child_ids for p in parent_ids if all(c.get(k) == p.get(k) for k in shared))
    child = (
        LabelShape(list(child_axes), ids=child_ids)
        if child_listed
        else LabelShape(list(child_axes), axes=child_axes)
    )
    parent = (
        LabelShape(list(parent_axes), ids=parent_ids)
        if parent_listed
        else LabelShape(list(parent_axes), axes=parent_axes)
    )
    assert edge_count(child, parent, shared) == expected


@st.composite
def compact_specs(draw: st.DrawFn) -> dict[str, Any]:
    dims = {
        f"d{i}": draw(
            st.one_of(
                st.builds(
                    lambda a, n, s: {"range": [a, a + n * s, s]}, st.integers(-5, 5), st.integers(0, 4), steps
                ),
                st.lists(st.integers(0, 6), unique=True, max_size=4),
            )
        )
        for i in range(3)
    }
    labels: dict[str, Any] = {}
    for n in range(draw(st.integers(1, 3))):
        axes = draw(st.lists(st.sampled_from(sorted(dims)), unique=True, max_size=3))
        entry: dict[str, Any] = {"command": "run " + " ".join(f"{{{a}}}" for a in axes), "over": axes}
        if labels and draw(st.booleans()):
            entry["after"] = draw(st.lists(st.sampled_from(sorted(labels)), unique=True, min_size=1))
        labels[f"l{n}"] = entry
    return {"dimensions": dims, "labels": labels}


@settings(max_examples=200)
@given(compact_specs())
def test_the_computed_sizes_are_the_sizes_of_the_expansion(spec: dict[str, Any]) -> None:
    """With the caps at the exact job and edge counts a spec parses; one below, it is refused 413."""
    try:
        parsed = spec_parse(spec, **CAPS)
    except WorkflowInvalid as exc:
        status = exc.status_code  # an empty label, an unmatched `after`: not a size problem
        parsed = None
    if parsed is None:
        assert status == 400
        return
    jobs, edges = len(parsed.jobs), sum(len(j.parents) for j in parsed.jobs)
    spec_parse(spec, max_jobs=jobs, max_edges=edges)
    if jobs > 1:
        with pytest.raises(WorkflowInvalid) as info:
            spec_parse(spec, max_jobs=jobs - 1, max_edges=edges)
        assert info.value.status_code == 413
    if edges:
        with pytest.raises(WorkflowInvalid) as info:
            spec_parse(spec, max_jobs=jobs, max_edges=edges - 1)
        assert info.value.status_code == 413
        assert info.value.field.endswith(".after")


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("spec", "status", "field"),
    [
        (
            "dimensions: {a: {range: [0, 1000000]}, b: {range: [0, 1000000]}}\n"
            "labels: {x: {command: 't {a} {b}', over: [a, b]}}\n",
            413,
            "labels.x.over",
        ),
        (
            "labels: {x: {command: 't {i}', over: {i: {range: [0, 1000000000000000000]}}}}\n",
            413,
            "labels.x.over",
        ),
        (
            "dimensions: {a: {range: [0, 90000]}, b: {range: [0, 90000]}}\n"
            "labels: {x: {command: 't {a}', over: [a]}, y: {command: 'u {b}', over: [b], after: [x]}}\n",
            413,
            "labels.y.after",
        ),
        ("labels: {x: {command: 't {i:0999999d}', over: {i: [1, 2]}}}\n", 400, "labels.x.command"),
    ],
)
def test_the_api_refuses_by_size_in_milliseconds(spec: str, status: int, field: str) -> None:
    client: APIClient = client_for("alice")
    submit(client, "name: [")  # the first request of a process imports the URL conf: not timed
    started = time.perf_counter()
    response = submit(client, spec)
    elapsed = time.perf_counter() - started
    assert response.status_code == status, response.content
    assert response.json()["field"] == field
    assert elapsed < 0.5
