"""Data ids with several dimensions: pure functions over plain data (docs/contributing.md#shape-of-the-code).

A step's data ids have the step's dimensions (`[visit]`, `[visit, detector]`, `[tract, patch, band]`).
With one dimension an id is a scalar, as it always was (`1234`); with several it is a tuple in
dimension order (`(3, 5)` for `{visit: 3, detector: 5}`), stored as a JSON list.

- `product_size` / `product_ids`: per-dimension value lists and ranges, and their product, counted
  before anything is made;
- `tuples_normalise`: rows (mappings or lists) → sorted unique tuples, one type per dimension;
- `project`: the distinct ids on fewer dimensions (step 2 per visit from step 1's visit × detector);
- `split_group_by`: one group per distinct value of the `group_by` dimensions;
- `gather_groups`: which upstream groups each group of a step depends on, from its ids' upstream ids (equal along shared dimensions
  and/or related by link rows).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from campaigns.splitting import GroupPlan, SplitError, _name_part, _scalar, ranges_size

Key = tuple[Any, ...]


def _scalar_ok(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def dimension_values_size(body: Any, where: str) -> int:
    """How many values one dimension of a `product` names: a list of values, or `{ranges: [[a, b], …]}`."""
    if isinstance(body, list):
        if not body or not all(_scalar_ok(v) for v in body):
            raise SplitError(
                f"{where} must be a non-empty list of integers or strings, or {{ranges: [[a, b]]}}"
            )
        if len({type(v) for v in body}) > 1:
            raise SplitError(f"{where} mixes integers and strings; use one type")
        if len(set(body)) != len(body):
            raise SplitError(f"{where} names a value twice")
        return len(body)
    if isinstance(body, Mapping) and set(body) == {"ranges"}:
        return ranges_size(body["ranges"])
    raise SplitError(f"{where} must be a list of values or {{ranges: [[first, last], …]}}, got {body!r}")


def product_size(body: Any, dims: Sequence[str], where: str) -> int:
    """The id count of `product: {dim: values | {ranges}}`: the product of the per-dimension counts,
    multiplied out without making a value (a 10^12 product costs nothing to refuse)."""
    if not isinstance(body, Mapping) or set(body) != set(dims):
        raise SplitError(f"{where} must give values for exactly the dimensions {list(dims)}")
    return math.prod(dimension_values_size(body[d], f"{where}.{d}") for d in dims)


def _dimension_values(body: Any) -> list[Any]:
    if isinstance(body, list):
        return sorted(body)
    values: list[int] = []
    for first, last in body["ranges"]:
        values.extend(range(first, last + 1))
    return sorted(set(values))


def product_ids(body: Mapping[str, Any], dims: Sequence[str]) -> list[Any]:
    """Every combination of the per-dimension values, sorted (scalars for one dimension)."""
    lists = [_dimension_values(body[d]) for d in dims]
    if len(dims) == 1:
        return lists[0]
    return list(itertools.product(*lists))


def tuples_normalise(rows: Iterable[Any], dims: Sequence[str]) -> list[Key]:
    """Sorted unique tuples from rows that are mappings with exactly `dims` as keys or lists of
    len(dims) values; each dimension holds one type (integers or strings). A duplicate is an error."""
    n = len(dims)
    wanted = set(dims)
    out: list[Key] = []
    for row in rows:
        if isinstance(row, Mapping):
            if row.keys() != wanted:
                raise SplitError(f"data id {dict(row)!r} must have exactly the dimensions {list(dims)}")
            key = tuple(row[d] for d in dims)
        elif isinstance(row, list | tuple) and len(row) == n:
            key = tuple(row)
        else:
            raise SplitError(f"data id {row!r} must be a mapping of {list(dims)} or a list of {n} values")
        out.append(key)
    for i, dim in enumerate(dims):
        kinds = {type(k[i]) for k in out}
        if kinds - {int, str}:
            bad = next(k for k in out if type(k[i]) not in (int, str))
            raise SplitError(f"data id {bad!r}: {dim} must be an integer or a string")
        if len(kinds) > 1:
            raise SplitError(f"data ids mix integers and strings in dimension {dim}; use one type")
    out.sort()
    for a, b in itertools.pairwise(out):
        if a == b:
            raise SplitError(f"data id {dict(zip(dims, a, strict=True))!r} appears more than once")
    return out


def data_rows_from_text(text: str, *, fmt: str, dims: Sequence[str]) -> list[Any]:
    """Rows of several dimensions from a CSV (a header naming at least `dims`) or a JSON list (of
    mappings or lists); `tuples_normalise` checks them."""
    if fmt == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SplitError(f"data file is not valid JSON: {exc}") from exc
        if not isinstance(value, list):
            raise SplitError("a JSON data file holds a list of data ids")
        return value
    if fmt != "csv":
        raise SplitError(f"data file format must be csv or json, not {fmt!r}")
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        raise SplitError("the CSV data file is empty")
    header = rows[0]
    missing = [d for d in dims if d not in header]
    if missing:
        raise SplitError(f"the CSV data file has no column {missing[0]!r} (columns: {', '.join(header)})")
    idx = [header.index(d) for d in dims]
    width = max(idx) + 1
    short = next((n for n, row in enumerate(rows[1:], start=2) if len(row) < width), None)
    if short is not None:
        raise SplitError(f"line {short} of the CSV data file has fewer columns than its header")
    return [[_scalar(row[i]) for i in idx] for row in rows[1:]]


def as_key(data_id: Any, n: int) -> Key:
    """An id as a tuple of its `n` dimension values (a scalar for one dimension, a JSON list for several)."""
    return (data_id,) if n == 1 else tuple(data_id)


def from_key(key: Key) -> Any:
    return key[0] if len(key) == 1 else key


def positions(dims: Sequence[str], sub: Sequence[str]) -> list[int]:
    return [list(dims).index(d) for d in sub]


def key_getter(dims: Sequence[str], sub: Sequence[str]) -> Callable[[Any], Key]:
    """A function from an id of `dims` to the tuple of its `sub` values (C-speed where it can)."""
    idx = positions(dims, sub)
    if not idx:
        return lambda _i: ()
    if len(dims) == 1:
        return lambda i: (i,)
    if len(idx) == 1:
        p = idx[0]
        return lambda i: (i[p],)
    return operator.itemgetter(*idx)


def project(ids: Sequence[Any], dims: Sequence[str], onto: Sequence[str]) -> list[Any]:
    """The distinct ids on the dimensions `onto` (a subset of `dims`), sorted."""
    if list(onto) == list(dims):
        return list(ids)
    idx = positions(dims, onto)
    if len(idx) == 1:
        p = idx[0]
        return sorted({i[p] for i in ids})
    get = operator.itemgetter(*idx)
    return sorted({get(i) for i in ids})


def key_text(data_id: Any) -> str:
    """An id's values joined by `_` (a scalar as itself)."""
    return "_".join(map(str, data_id)) if isinstance(data_id, list | tuple) else str(data_id)


def group_by_name(dims: Sequence[str], key: Key) -> str:
    return "_".join(f"{d}-{_name_part(v)}" for d, v in zip(dims, key, strict=True))


def split_group_by(ids: Sequence[Any], dims: Sequence[str], by: Sequence[str]) -> list[GroupPlan]:
    """One group per distinct value of the `by` dimensions, in sorted order; each group keeps its
    ids sorted. O(n): ids come sorted, so a dict keeps both orders."""
    if not ids:
        raise SplitError("no data ids to split")
    n = len(dims)
    idx = positions(dims, by)
    buckets: dict[Key, list[Any]] = {}
    if n == 1:
        for i in ids:
            buckets.setdefault((i,), []).append(i)
    elif idx == list(range(len(idx))):  # a prefix of the dimensions: slicing is cheapest
        m = len(idx)
        for i in ids:
            k = i[:m]
            b = buckets.get(k)
            if b is None:
                buckets[k] = [i]
            else:
                b.append(i)
    else:
        for i in ids:
            buckets.setdefault(tuple(i[p] for p in idx), []).append(i)
    plans: list[GroupPlan] = []
    names: set[str] = set()
    for key in sorted(buckets):
        name = group_by_name(by, key)
        if name in names:
            raise SplitError(f"two groups would be named {name!r}")
        names.add(name)
        plans.append(GroupPlan(name, buckets[key]))
    return plans


def link_rows(rows: Any, where: str, *, limit: int | None = None) -> tuple[list[str], list[Key]]:
    """Gather link rows (`{tract: 0, patch: 1, visit: [3, 4]}`): every row has the same keys; a list
    value stands for each of its values. Returns the keys and the expanded rows as tuples; more
    than `limit` expanded rows are refused, counted before any is made."""
    if not isinstance(rows, list) or not rows:
        raise SplitError(f"{where} must be a non-empty list of rows")
    if limit is not None:
        total = sum(
            math.prod(len(v) if isinstance(v, list) else 1 for v in row.values())
            for row in rows
            if isinstance(row, Mapping)
        )
        if total > limit:
            raise SplitError(
                f"{where} stands for {total} rows; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)"
            )
    keys: list[str] | None = None
    out: list[Key] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not row:
            raise SplitError(f"{where}[{i}] must be a mapping of dimension values")
        if keys is None:
            keys = list(row)
        elif set(row) != set(keys):
            raise SplitError(
                f"{where}[{i}] has keys {sorted(map(str, row))}; every row has {sorted(map(str, keys))}"
            )
        columns = []
        for k in keys:
            value = row[k]
            values = value if isinstance(value, list) else [value]
            if not values or not all(_scalar_ok(v) for v in values):
                raise SplitError(f"{where}[{i}].{k} must be a value or a non-empty list of values")
            columns.append(values)
        out.extend(itertools.product(*columns))
    return keys or [], out


def gather_groups(
    plans: Sequence[GroupPlan],
    dims: Sequence[str],
    up_plans: Sequence[GroupPlan],
    up_dims: Sequence[str],
    *,
    along: Sequence[str],
    link_keys: Sequence[str] = (),
    links: Sequence[Key] = (),
) -> tuple[dict[str, list[str]], int]:
    """Each group's upstream groups (in upstream order) and the number of (id, upstream id) pairs.

    An id needs the upstream ids equal to it `along` those dimensions and, with link rows, those a
    row relates it to (a row's keys among `dims` pick the id, its keys among `up_dims` the upstream
    ids). The upstream ids are indexed once by those values (count, groups), never listed per id.
    An id that gathers nothing is an error naming it.
    """
    lk_d = [k for k in link_keys if k in dims and k not in along]
    lk_u = [k for k in link_keys if k in up_dims and k not in along]
    up_key = key_getter(up_dims, [*along, *lk_u])
    index: dict[Any, list[Any]] = {}  # upstream key → [id count, {group positions}]
    for g, plan in enumerate(up_plans):
        for u in plan.data_ids:
            k = up_key(u)
            entry = index.get(k)
            if entry is None:
                index[k] = [1, {g}]
            else:
                entry[0] += 1
                entry[1].add(g)
    along_key = key_getter(dims, along)
    linked: dict[Key, list[Key]] | None = None
    link_key = key_getter(dims, lk_d)
    if link_keys:
        keys = list(link_keys)
        row_d, row_u = [keys.index(k) for k in lk_d], [keys.index(k) for k in lk_u]
        sets: dict[Key, set[Key]] = {}
        for row in links:
            sets.setdefault(tuple(row[p] for p in row_d), set()).add(tuple(row[p] for p in row_u))
        linked = {k: list(v) for k, v in sets.items()}  # values may mix types: no order needed
    upstream: dict[str, list[str]] = {}
    edges = 0
    for plan in plans:
        found: set[int] = set()
        for d in plan.data_ids:
            base = along_key(d)
            targets = [base] if linked is None else [base + t for t in linked.get(link_key(d), ())]
            hit = False
            for t in targets:
                entry = index.get(t)
                if entry is not None:
                    hit = True
                    edges += entry[0]
                    found |= entry[1]
            if not hit:
                values = d if isinstance(d, tuple) else (d,)
                raise SplitError(
                    f"data id {dict(zip(dims, values, strict=True))!r} gathers no data id of the step before"
                )
        upstream[plan.name] = [up_plans[g].name for g in sorted(found)]
    return upstream, edges
