"""campaigns.splitting: every data id in exactly one group, sizes within bounds, stable names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.splitting import (
    SplitError,
    data_ids_from_ranges,
    data_ids_from_text,
    data_ids_normalise,
    split,
)

int_ids = st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=400, unique=True).map(sorted)
str_ids = st.lists(
    st.text("abcdefXYZ_/ 09", min_size=1, max_size=12), min_size=1, max_size=200, unique=True
).map(sorted)


def _assert_partition(ids, plans):
    flat = [d for plan in plans for d in plan.data_ids]
    assert sorted(flat) == list(ids)
    assert len(flat) == len(set(flat))
    assert len({plan.name for plan in plans}) == len(plans)
    assert all(plan.data_ids for plan in plans)


@settings(max_examples=200, deadline=None)
@given(ids=st.one_of(int_ids, str_ids), size=st.integers(1, 50), min_groups=st.integers(1, 10))
def test_query_split_puts_each_id_in_exactly_one_group_within_bounds(ids, size, min_groups):
    if min_groups > len(ids):
        with pytest.raises(SplitError, match="min_groups"):
            split(ids, {"rule": "query", "max_group_size": size, "min_groups": min_groups})
        return
    plans = split(ids, {"rule": "query", "max_group_size": size, "min_groups": min_groups})
    _assert_partition(ids, plans)
    sizes = [len(p.data_ids) for p in plans]
    assert max(sizes) - min(sizes) <= 1
    assert len(plans) >= min_groups
    # Within the size bound unless min_groups forces smaller groups; never more groups than needed.
    assert max(sizes) <= size or len(plans) == min_groups
    assert len(plans) == max(min_groups, -(-len(ids) // size))


@settings(max_examples=100, deadline=None)
@given(ids=st.one_of(int_ids, str_ids), size=st.integers(1, 50))
def test_split_names_are_stable_and_independent_of_input_order(ids, size):
    first = split(ids, {"rule": "query", "max_group_size": size})
    again = split(data_ids_normalise(list(reversed(ids))), {"rule": "query", "max_group_size": size})
    assert [(p.name, p.data_ids) for p in first] == [(p.name, p.data_ids) for p in again]


@settings(max_examples=150, deadline=None)
@given(ids=int_ids, cuts=st.lists(st.integers(-10_000, 10_000), max_size=8, unique=True))
def test_ranges_split_is_a_partition_when_ranges_cover_the_ids(ids, cuts):
    bounds = sorted({ids[0], *[c for c in cuts if ids[0] < c <= ids[-1]]})
    ranges = [[lo, hi - 1] for lo, hi in zip(bounds, bounds[1:], strict=False)] + [[bounds[-1], ids[-1]]]
    used = [r for r in ranges if any(r[0] <= i <= r[1] for i in ids)]
    plans = split(ids, {"rule": "ranges", "ranges": used})
    _assert_partition(ids, plans)
    for plan, (lo, hi) in zip(plans, used, strict=True):
        assert all(lo <= d <= hi for d in plan.data_ids)


@settings(max_examples=150, deadline=None)
@given(ids=int_ids, k=st.integers(1, 6))
def test_values_split_with_lists_is_a_partition(ids, k):
    values = [ids[i::k] for i in range(k) if ids[i::k]]
    plans = split(ids, {"rule": "values", "values": values})
    _assert_partition(ids, plans)
    assert [p.data_ids for p in plans] == [sorted(v) for v in values]


def test_an_id_outside_every_value_is_an_error_not_a_silent_drop():
    with pytest.raises(SplitError, match="data id 3 is in no group"):
        split([1, 2, 3], {"rule": "values", "values": [[1, 2]]})


def test_overlapping_ranges_are_refused():
    with pytest.raises(SplitError, match="overlap"):
        split([1, 2, 3], {"rule": "ranges", "ranges": [[1, 2], [2, 3]]})


def test_a_value_in_a_list_and_a_range_is_refused():
    with pytest.raises(SplitError, match="more than one group"):
        split([1, 2, 3], {"rule": "values", "values": [[1, 2], {"min": 2, "max": 3}]})


def test_none_rule_makes_one_group_named_all():
    plans = split([5, 6], {"rule": "none"})
    assert [(p.name, p.data_ids) for p in plans] == [("all", [5, 6])]


def test_unknown_rule_and_unknown_keys_are_named():
    with pytest.raises(SplitError, match="one of none, values, ranges, query"):
        split([1], {"rule": "chunks"})
    with pytest.raises(SplitError, match="does not take min_groups"):
        split([1], {"rule": "none", "min_groups": 2})


def test_duplicates_and_mixed_types_are_refused():
    with pytest.raises(SplitError, match="appears more than once"):
        data_ids_normalise([1, 2, 2])
    with pytest.raises(SplitError, match="mix integers and strings"):
        data_ids_normalise([1, "a"])


def test_ids_come_from_inclusive_ranges_csv_and_json():
    assert data_ids_from_ranges([[1, 3], [10, 10]]) == [1, 2, 3, 10]
    assert data_ids_from_text("visit,band\n7,r\n8,g\n", fmt="csv", column="visit") == [7, 8]
    assert data_ids_from_text('["a", "b"]', fmt="json") == ["a", "b"]
    with pytest.raises(SplitError, match="no column 'exposure'"):
        data_ids_from_text("visit\n1\n", fmt="csv", column="exposure")
    with pytest.raises(SplitError, match="ends before it starts"):
        data_ids_from_ranges([[5, 1]])


def test_long_names_are_cut_with_a_stable_digest():
    ids = ["a" * 90, "b" * 90]
    plans = split(ids, {"rule": "query", "max_group_size": 2})
    assert len(plans[0].name) <= 100
    assert plans[0].name == split(ids, {"rule": "query", "max_group_size": 2})[0].name


def test_values_that_clean_to_the_same_text_still_get_different_names():
    plans = split([" ", "/", "a b", "a/b"], {"rule": "query", "max_group_size": 1})
    assert len({p.name for p in plans}) == 4
    assert plans[2].name.startswith("a_b~")
