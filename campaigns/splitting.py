"""Campaign data and group splitting: pure functions over plain data (docs/contributing.md#shape-of-the-code).

Data ids are scalars of one type (ints, e.g. visits, or strings). A step's split rule turns the
campaign's data ids into groups; every data id lands in exactly one group or the split fails with a
message naming the problem — nothing is ever dropped silently.

Rules:

- `{rule: none}` — one group with everything;
- `{rule: values, values: [v, [v1, v2], {min: a, max: b}, …]}` — one group per entry;
- `{rule: ranges, ranges: [[a, b], …]}` — one group per inclusive range;
- `{rule: query, max_group_size: N, min_groups: M}` — sorted ids cut into contiguous groups of
  near-equal size, as many as needed for N and at least M.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DataId = int | str

MAX_NAME = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class SplitError(ValueError):
    """The data or the split rule cannot be used; the message says why, and `field` names the
    rule's key at fault when there is one (`ranges`, `values`, `max_group_size`, …)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class GroupPlan:
    name: str
    data_ids: list[DataId]


def _check_uniform(ids: Sequence[Any]) -> None:
    kinds = {type(v) for v in ids}
    if kinds - {int, str}:
        bad = next(v for v in ids if type(v) not in (int, str))
        raise SplitError(f"data ids must be integers or strings, got {bad!r}")
    if len(kinds) > 1:
        raise SplitError("data ids mix integers and strings; use one type")


def data_ids_normalise(ids: Iterable[Any]) -> list[DataId]:
    """Sorted, checked data ids. Duplicates are an error (they usually mean a bad input file)."""
    values = list(ids)
    _check_uniform(values)
    ordered = sorted(values)
    for i in range(1, len(ordered)):
        if ordered[i] == ordered[i - 1]:
            raise SplitError(f"data id {ordered[i]!r} appears more than once")
    return ordered


def ranges_size(ranges: Any) -> int:
    """How many ids inclusive integer ranges [[first, last], …] hold, counted without making them
    (ranges may overlap; the count is then an upper bound and normalising finds the duplicates)."""
    if not isinstance(ranges, list):
        raise SplitError(f"data ranges are a list of [first, last] pairs, got {ranges!r}")
    total = 0
    for pair in ranges:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        ):
            raise SplitError(f"a range is [first, last] with two integers, got {pair!r}")
        first, last = pair
        if last < first:
            raise SplitError(f"range [{first}, {last}] ends before it starts")
        total += last - first + 1
    return total


def data_ids_from_ranges(ranges: Sequence[Sequence[int]], *, limit: int | None = None) -> list[int]:
    """Inclusive integer ranges [[first, last], …]; refused (before any id is made) when they hold
    more than `limit` ids."""
    size = ranges_size(ranges)
    if limit is not None and size > limit:
        raise SplitError(
            f"data.ranges holds {size} data ids; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)"
        )
    out: list[int] = []
    for first, last in ranges:
        out.extend(range(first, last + 1))
    return out


def split_size(rule: Mapping[str, Any], n: int | None) -> int:
    """How many groups a checked split rule makes of `n` ids (None: not known before launch; the
    rule's own minimum then), computed without splitting."""
    kind = rule.get("rule", "none")
    if kind == "values":
        return len(rule.get("values") or [])
    if kind == "ranges":
        return len(rule.get("ranges") or [])
    if kind == "query":
        size = int(rule["max_group_size"])
        min_groups = int(rule.get("min_groups", 1))
        return max(min_groups, -(-n // size)) if n is not None and size >= 1 else min_groups
    return 1


def data_ids_from_text(text: str, *, fmt: str, column: str | None = None) -> list[DataId]:
    """Data ids from a CSV (one column, by name or the first) or a JSON list."""
    if fmt == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SplitError(f"data file is not valid JSON: {exc}") from exc
        if not isinstance(value, list):
            raise SplitError("a JSON data file holds a list of data ids")
        return list(value)
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text))
        rows = [row for row in reader if row]
        if not rows:
            raise SplitError("the CSV data file is empty")
        header, body = rows[0], rows[1:]
        index = 0
        if column is not None:
            if column not in header:
                raise SplitError(f"the CSV data file has no column {column!r} (columns: {', '.join(header)})")
            index = header.index(column)
        return [_scalar(row[index]) for row in body]
    raise SplitError(f"data file format must be csv or json, not {fmt!r}")


def _scalar(text: str) -> DataId:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _name_part(value: DataId) -> str:
    """A URL- and shell-safe form of a value; when cleaning changed it, a digest of the original keeps
    two different values from sharing a name (`a b` and `a/b` are `a_b~…` with different digests)."""
    text = str(value)
    safe = _UNSAFE.sub("_", text).strip("_") or "x"
    if safe == text:
        return safe
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{safe}~{digest}"


def group_name(first: DataId, last: DataId) -> str:
    """A stable name from the group's content: `first-last` (or `first` for one id)."""
    name = _name_part(first) if first == last else f"{_name_part(first)}-{_name_part(last)}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(f"{first!r}:{last!r}".encode(), usedforsecurity=False).hexdigest()[:12]
        name = f"{name[: MAX_NAME - 13]}~{digest}"
    return name


def _bounded(n: int, max_group_size: int, min_groups: int) -> int:
    """How many groups: enough for the size limit, at least min_groups, never more than n."""
    if max_group_size < 1:
        raise SplitError("max_group_size must be at least 1")
    if min_groups < 1:
        raise SplitError("min_groups must be at least 1")
    if min_groups > n:
        raise SplitError(f"min_groups {min_groups} is more than the {n} data ids")
    return max(min_groups, math.ceil(n / max_group_size))


def split_query(ids: Sequence[DataId], *, max_group_size: int, min_groups: int = 1) -> list[GroupPlan]:
    """Cut sorted ids into contiguous groups whose sizes differ by at most one.

    1. k = max(min_groups, ceil(n / max_group_size)) groups.
    2. The first n mod k groups get ceil(n / k) ids, the rest floor(n / k).
    """
    n = len(ids)
    k = _bounded(n, max_group_size, min_groups)
    base, extra = divmod(n, k)
    plans: list[GroupPlan] = []
    start = 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        chunk = list(ids[start : start + size])
        plans.append(GroupPlan(group_name(chunk[0], chunk[-1]), chunk))
        start += size
    return plans


def _scalar_value(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SplitError(f"{where}: a split value is an integer or a string, got {value!r}", field="values")


def _selector(entry: Any, i: int) -> tuple[str, Any]:
    where = f"values[{i}]"
    if isinstance(entry, Mapping):
        if set(entry) - {"min", "max", "name"} or "min" not in entry or "max" not in entry:
            raise SplitError(f"{where}: a range value is {{min: a, max: b}}, got {entry!r}", field="values")
        _scalar_value(entry["min"], where)
        _scalar_value(entry["max"], where)
        if type(entry["min"]) is not type(entry["max"]) or entry["min"] > entry["max"]:
            raise SplitError(f"{where}: min must not be above max, both of one type", field="values")
        if "name" in entry and not (isinstance(entry["name"], str | int) and str(entry["name"]).strip()):
            raise SplitError(f"{where}: a group name is a non-empty string", field="values")
        return "range", (entry["min"], entry["max"])
    if isinstance(entry, list):
        if not entry:
            raise SplitError(f"{where}: an empty list of values makes an empty group", field="values")
        for value in entry:
            _scalar_value(value, where)
        return "set", set(entry)
    _scalar_value(entry, where)
    return "set", {entry}


def _values_index(values: Any) -> tuple[dict[Any, int], list[tuple[Any, Any, int]]]:
    """The exact values (value → entry) and the ranges (sorted by start) of a `values` list;
    refused when an entry is malformed, a value is in two entries or two ranges overlap."""
    if not isinstance(values, list) or not values:
        raise SplitError("split rule values needs a non-empty `values` list", field="values")
    exact: dict[Any, int] = {}
    spans: list[tuple[Any, Any, int]] = []
    names: set[str] = set()
    for i, entry in enumerate(values):
        kind, sel = _selector(entry, i)
        if isinstance(entry, Mapping) and "name" in entry:
            name = _name_part(str(entry["name"]))
            if name in names:
                raise SplitError(f"two groups would be named {name!r}", field="values")
            names.add(name)
        if kind == "set":
            for value in sel:
                if value in exact:
                    raise SplitError(
                        f"value {value!r} is in more than one group (values {exact[value]} and {i})",
                        field="values",
                    )
                exact[value] = i
        else:
            spans.append((sel[0], sel[1], i))
    try:
        spans.sort()
    except TypeError as exc:
        raise SplitError("range bounds must all be of one type", field="values") from exc
    for (_, last, i), (first, _, j) in itertools.pairwise(spans):
        if first <= last:
            raise SplitError(f"split ranges {i} and {j} overlap", field="values")
    return exact, spans


def split_values(ids: Sequence[DataId], *, values: Sequence[Any]) -> list[GroupPlan]:
    """One group per entry of `values` (a value, a list, or {min, max}); every id exactly once.

    1. Exact values go into one dict value → entry; a value in two entries is an error.
    2. Ranges are sorted by their start; overlapping ranges are an error.
    3. Each id is looked up in the dict, then by bisection in the ranges: O(n log k).
    """
    exact, spans = _values_index(list(values))
    starts = [first for first, _, _ in spans]
    buckets: list[list[DataId]] = [[] for _ in values]
    for data_id in ids:
        hit = exact.get(data_id)
        try:
            pos = bisect.bisect_right(starts, data_id) - 1
        except TypeError as exc:
            raise SplitError(f"data id {data_id!r} cannot be compared with the range bounds") from exc
        in_span = pos >= 0 and data_id <= spans[pos][1]
        if hit is not None and in_span:
            raise SplitError(
                f"data id {data_id!r} is in more than one group (values {hit} and {spans[pos][2]})"
            )
        if hit is None and not in_span:
            raise SplitError(f"data id {data_id!r} is in no group of the split values")
        buckets[hit if hit is not None else spans[pos][2]].append(data_id)
    return _plans_from_buckets(buckets, values)


def _ranges_as_values(ranges: Any) -> list[dict[str, Any]]:
    """A ranges rule's [[first, last], …] as the equivalent `values` entries, checked."""
    if not isinstance(ranges, list) or not ranges:
        raise SplitError("split rule ranges needs a non-empty `ranges` list", field="ranges")
    out: list[dict[str, Any]] = []
    for i, pair in enumerate(ranges):
        if not isinstance(pair, list) or len(pair) != 2:
            raise SplitError(f"ranges[{i}]: a range is [first, last], got {pair!r}", field="ranges")
        try:
            _selector({"min": pair[0], "max": pair[1]}, i)
        except SplitError as exc:
            raise SplitError(str(exc).replace("values[", "ranges[", 1), field="ranges") from None
        out.append({"min": pair[0], "max": pair[1]})
    return out


def _ranges_checked(ranges: Any) -> list[dict[str, Any]]:
    values = _ranges_as_values(ranges)
    try:
        _values_index(values)
    except SplitError as exc:
        raise SplitError(str(exc).replace("split ranges", "ranges"), field="ranges") from None
    return values


def split_ranges(ids: Sequence[DataId], *, ranges: Sequence[Sequence[Any]]) -> list[GroupPlan]:
    """One group per inclusive range [first, last]; ranges must not overlap or leave ids out."""
    return split_values(ids, values=_ranges_checked(list(ranges)))


def _plans_from_buckets(buckets: list[list[DataId]], values: Sequence[Any]) -> list[GroupPlan]:
    plans: list[GroupPlan] = []
    seen: set[str] = set()
    for bucket, value in zip(buckets, values, strict=True):
        if not bucket:
            raise SplitError(f"split value {value!r} matches no data id")
        name = str(value["name"]) if isinstance(value, Mapping) and "name" in value else None
        name = _name_part(name) if name else group_name(bucket[0], bucket[-1])
        if name in seen:
            raise SplitError(f"two groups would be named {name!r}")
        seen.add(name)
        plans.append(GroupPlan(name, bucket))
    return plans


SPLIT_RULES = ("none", "values", "ranges", "query")


def split_check(rule: Mapping[str, Any]) -> None:
    """Validate a split rule completely before any data is seen: the rule, its keys, and every
    entry of its values or ranges (shape, types, duplicates, overlaps). `field` names the key."""
    kind = rule.get("rule", "none")
    if not isinstance(kind, str) or kind not in SPLIT_RULES:
        raise SplitError(f"split rule must be one of {', '.join(SPLIT_RULES)}, not {kind!r}", field="rule")
    allowed = {
        "none": {"rule"},
        "values": {"rule", "values"},
        "ranges": {"rule", "ranges"},
        "query": {"rule", "max_group_size", "min_groups"},
    }[kind]
    unknown = {str(k) for k in rule} - allowed
    if unknown:
        first = sorted(unknown)[0]
        raise SplitError(f"split rule {kind} does not take {', '.join(sorted(unknown))}", field=first)
    if kind == "query":
        size, min_groups = rule.get("max_group_size"), rule.get("min_groups", 1)
        if not isinstance(size, int) or isinstance(size, bool):
            raise SplitError("split rule query needs an integer max_group_size", field="max_group_size")
        if size < 1:
            raise SplitError("max_group_size must be at least 1", field="max_group_size")
        if not isinstance(min_groups, int) or isinstance(min_groups, bool) or min_groups < 1:
            raise SplitError("min_groups must be an integer, at least 1", field="min_groups")
    if kind == "values":
        _values_index(rule.get("values"))
    if kind == "ranges":
        _ranges_checked(rule.get("ranges"))


def split(ids: Sequence[DataId], rule: Mapping[str, Any]) -> list[GroupPlan]:
    """Apply a split rule to sorted, unique data ids (see `data_ids_normalise`)."""
    split_check(rule)
    if not ids:
        raise SplitError("no data ids to split")
    kind = rule.get("rule", "none")
    if kind == "none":
        return [GroupPlan("all", list(ids))]
    if kind == "values":
        return split_values(ids, values=rule["values"])
    if kind == "ranges":
        return split_ranges(ids, ranges=rule["ranges"])
    return split_query(
        ids, max_group_size=int(rule["max_group_size"]), min_groups=int(rule.get("min_groups", 1))
    )
