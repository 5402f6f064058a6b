"""Spec checks shared by the campaign spec's parts: the errors, and the data-id dimensions of the
campaign and its steps (`dimensions`, `data`, `group_by`, `gather`). Pure: counts come from the
spec's numbers, nothing is expanded (docs/operator-guide/campaigns.md#data-ids-with-several-dimensions)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from campaigns.dataids import link_rows, product_size, tuples_normalise
from campaigns.splitting import SplitError, ranges_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
STEP_KEYS = {
    "name",
    "labels",
    "split",
    "max_running_groups",
    "breakpoint",
    "overrides",
    "dimensions",
    "data",
    "group_by",
    "gather",
    "cluster",
}
DATA_SOURCES = ("ids", "ranges", "file", "query", "product")
# Command placeholders that are not dimensions; a dimension may not take one of these names.
RESERVED = {"data_id", "group", "step", "campaign", "attempt", "label"}


class SpecInvalid(ValueError):
    """The spec cannot be used; the message names the field (also in `field` when known).
    `status_code` is the HTTP answer: 400, or 413 for a size over a cap (`SpecTooLarge`)."""

    status_code = 400

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field

    def as_dict(self) -> dict[str, Any]:
        return {"detail": str(self), **({"field": self.field} if self.field else {})}


class SpecTooLarge(SpecInvalid):
    """The data or the groups a spec describes are over a cap (`CAMPAIGNS["MAX_DATA_IDS"]`,
    `["MAX_GROUPS"]`); found from the spec's numbers, before any id or group is made."""

    status_code = 413


# Messages start with the dotted field they are about (`steps[0].labels must be …`).
_FIELD_AT_START = re.compile(r"^[A-Za-z_][\w-]*(?:\[\d+\])?(?:\.[\w-]+(?:\[\d+\])?)*")


def require(cond: bool, message: str) -> None:
    """A 400 when `cond` fails; its field is the dotted path the message starts with."""
    if not cond:
        match = _FIELD_AT_START.match(message)
        raise SpecInvalid(message, field=match.group(0) if match else "")


def data_check(data: Any, dims: list[str], where: str) -> int | None:
    """A `data` block (one of ids, ranges, file, query, product) for ids of `dims`; returns how many
    ids it names when the spec alone says (counted, never made); over `CAMPAIGNS["MAX_DATA_IDS"]`
    is refused (413)."""
    require(
        isinstance(data, Mapping) and len(data) == 1,
        f"{where} must have exactly one of {', '.join(DATA_SOURCES)}",
    )
    source = next(iter(data))
    require(source in DATA_SOURCES, f"{where}.{source}: unknown source")
    body = data[source]
    field = f"{where}.{source}"
    if source == "file":
        require(isinstance(body, Mapping) and isinstance(body.get("path"), str), f"{field} needs a path")
        require(body.get("format", "csv") in ("csv", "json"), f"{field}.format must be csv or json")
    if source == "query":
        require(
            isinstance(body, Mapping) and isinstance(body.get("catalog"), str), f"{field} needs a catalog"
        )
        require(isinstance(body.get("where", {}), Mapping), f"{field}.where must be a mapping")
    limit = int(settings.CAMPAIGNS["MAX_DATA_IDS"])
    try:
        if source == "ids":
            require(isinstance(body, list), f"{field} must be a list")
            n = len(body)
        elif source == "ranges":
            if len(dims) > 1:
                raise SpecInvalid(f"{field}: ranges give one dimension; for {dims} use product", field=field)
            n = ranges_size(body)
        elif source == "product":
            n = product_size(body, dims, field)
        else:
            return None
    except SplitError as exc:
        raise SpecInvalid(
            f"{field}: {exc}" if not str(exc).startswith(field) else str(exc), field=field
        ) from None
    if n <= limit and source == "ids" and len(dims) > 1:
        try:
            tuples_normalise(body, dims)
        except SplitError as exc:
            raise SpecInvalid(f"{field}: {exc}", field=field) from None
    if n > limit:
        raise SpecTooLarge(
            f"{field} holds {n} data ids; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)",
            field=field,
        )
    return n


def _names(value: Any, field: str, *, allowed: Sequence[str] | None = None) -> list[str]:
    """A non-empty list of distinct dimension names (a single name stands for a list of one)."""
    names = [value] if isinstance(value, str) else value
    _ok = (
        isinstance(names, list)
        and bool(names)
        and all(isinstance(d, str) and bool(NAME_RE.match(d)) for d in names)
        and len(set(names)) == len(names)
    )
    if not _ok:
        raise SpecInvalid(f"{field} must be a non-empty list of distinct names, got {value!r}", field=field)
    reserved = [d for d in names if d in RESERVED and d != "data_id"]
    if reserved:
        raise SpecInvalid(f"{field}: {reserved[0]!r} is a command placeholder, not a dimension", field=field)
    if allowed is not None:
        extra = [d for d in names if d not in allowed]
        if extra:
            raise SpecInvalid(
                f"{field}: {extra[0]!r} is not one of the dimensions {list(allowed)}", field=field
            )
    return list(names)


def dims_parse(raw: Mapping[str, Any], where: str) -> list[str]:
    """`dimensions: [visit, detector]`, or the older `dimension: visit` (= `dimensions: [visit]`)."""
    prefix = f"{where}." if where else ""
    if "dimension" in raw and "dimensions" in raw:
        raise SpecInvalid(f"{prefix}dimension and dimensions: give one", field=f"{prefix}dimensions")
    if "dimensions" in raw:
        return _names(raw["dimensions"], f"{prefix}dimensions")
    dimension = raw.get("dimension", "data_id")
    require(isinstance(dimension, str) and bool(NAME_RE.match(dimension)), "dimension must be a plain name")
    return _names(dimension, f"{prefix}dimension")


def _product_sizes(data: Mapping[str, Any]) -> dict[str, int]:
    """Per-dimension value counts of checked `product` data (empty for other sources)."""
    body = data.get("product")
    if not isinstance(body, Mapping):
        return {}
    return {d: product_size({d: v}, [d], "") for d, v in body.items()}


def step_dims_check(
    body: Mapping[str, Any],
    where: str,
    dims: list[str],
    n_ids: int | None,
    data: Mapping[str, Any],
    pipeline: Mapping[str, Mapping[str, Any]],
    earlier: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A step's `dimensions`, `data`, `group_by` and `gather`, checked; with the id and group counts
    the spec alone gives (None when only the data says)."""
    sdims = dims_parse(body, where) if "dimensions" in body else list(dims)
    own = body.get("data")
    if own is not None:
        n = data_check(own, sdims, f"{where}.data")
        sizes = _product_sizes(own)
    else:
        missing = [d for d in sdims if d not in dims]
        if missing:
            raise SpecInvalid(
                f"{where}.dimensions: {missing[0]!r} is not a dimension of the campaign's data; "
                "give the step its own data",
                field=f"{where}.data",
            )
        sizes = _product_sizes(data)
        n = n_ids if sdims == dims else (sizes and _prod(sizes, sdims)) or None
    for label in body.get("labels") or []:
        per = pipeline[label]["per"]
        if isinstance(per, list):
            _names(per, f"pipeline.{label}.per", allowed=sdims)
    group_by = None
    n_groups: int | None = None
    if body.get("group_by") is not None:
        group_by = _names(body["group_by"], f"{where}.group_by", allowed=sdims)
        n_groups = _prod(sizes, group_by) if sizes else (n if group_by == sdims else None)
    gather = None
    if body.get("gather") is not None:
        gather = _gather_check(body["gather"], f"{where}.gather", sdims, earlier)
    return {
        "dimensions": sdims,
        "data": dict(own) if own is not None else None,
        "group_by": group_by,
        "gather": gather,
        "n_ids": n,
        "n_groups": n_groups,
    }


def _prod(sizes: Mapping[str, int], dims: Sequence[str]) -> int:
    out = 1
    for d in dims:
        out *= sizes[d]
    return out


def _gather_check(
    raw: Any, where: str, sdims: list[str], earlier: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """`gather: {step, along, links | query}`: which ids of an earlier step each id of this one needs."""
    require(isinstance(raw, Mapping), f"{where} must be a mapping")
    unknown = set(raw) - {"step", "along", "links", "query"}
    if unknown:
        raise SpecInvalid(f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}", field=where)
    if not earlier:
        raise SpecInvalid(f"{where}: the first step has no step before it to gather from", field=where)
    up_name = raw.get("step", earlier[-1]["name"])
    up = next((s for s in earlier if s["name"] == up_name), None)
    if up is None:
        raise SpecInvalid(f"{where}.step: {up_name!r} is not an earlier step", field=f"{where}.step")
    up_dims = up["dimensions"]
    shared = [d for d in sdims if d in up_dims]
    if raw.get("along") == []:
        along: list[str] = []  # explicitly none: only links or a query relate the steps
    elif "along" in raw:
        along = _names(raw["along"], f"{where}.along", allowed=shared)
    else:
        along = shared
    out: dict[str, Any] = {"step": up_name, "along": along}
    if "links" in raw and "query" in raw:
        raise SpecInvalid(f"{where}: give links or query, not both", field=f"{where}.links")
    if "links" in raw:
        try:
            keys, _ = link_rows(raw["links"], f"{where}.links", limit=int(settings.CAMPAIGNS["MAX_DATA_IDS"]))
        except SplitError as exc:
            cls = SpecTooLarge if "the limit is" in str(exc) else SpecInvalid
            raise cls(str(exc), field=f"{where}.links") from None
        _names(keys, f"{where}.links", allowed=[*sdims, *[d for d in up_dims if d not in sdims]])
        out["links"] = list(raw["links"])
    elif "query" in raw:
        q = raw["query"]
        require(
            isinstance(q, Mapping) and isinstance(q.get("catalog"), str), f"{where}.query needs a catalog"
        )
        require(isinstance(q.get("where", {}), Mapping), f"{where}.query.where must be a mapping")
        out["query"] = dict(q)
    elif not along:
        raise SpecInvalid(
            f"{where}: steps {up_name} {up_dims} and this one {sdims} share no dimension; "
            "give links or a catalog query that relates them",
            field=f"{where}.links",
        )
    return out
