"""Deep checks of a campaign spec and of a rescue's body: every key of every split rule, step
option, override, data source and notification is checked when the spec is created, so a bad one
is a 400 naming its field then, never an error (or a 500) at dry run or launch.

Pure (docs/contributing.md#shape-of-the-code). `campaigns.spec.spec_validate` calls
`spec_raw_check` on the raw spec before its own pass and `spec_data_check` on the normalised
result; `FieldInvalid` carries the dotted field (`steps[0].split.ranges`), turned into
`SpecInvalid` by the caller.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings

from campaigns.splitting import (
    SplitError,
    data_ids_from_ranges,
    data_ids_normalise,
    split,
    split_check,
)
from dispatcher.workflows import WorkflowInvalid
from dispatcher.workflows.spec_check import site_rule_parse

STEP_KEYS = ("name", "labels", "split", "max_running_groups", "breakpoint", "overrides")
RESOURCE_KEYS = ("memory_mb", "cores", "walltime_s", "disk_mb", "priority")
DATA_FILE_KEYS = ("path", "format", "column")
DATA_QUERY_KEYS = ("catalog", "where")
NOTIFICATION_KEYS = ("webhook", "events")
RESCUE_OVERRIDE_KEYS = (*RESOURCE_KEYS, "labels", "sites")
SELECTION_KEYS = ("error", "label", "site", "data_min", "data_max")


class FieldInvalid(ValueError):
    """A spec or body value cannot be used; `field` is its dotted path."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _fail(field: str, problem: str) -> FieldInvalid:
    return FieldInvalid(f"{field}: {problem}", field)


def _keys_check(body: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise _fail(
            f"{where}.{unknown[0]}",
            f"unknown key(s) {', '.join(unknown)} in {where}; it takes {', '.join(allowed)}",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar(value: Any) -> bool:
    return _is_int(value) or isinstance(value, str)


# --- the raw spec ----------------------------------------------------------------------------


def spec_raw_check(raw: Mapping[str, Any]) -> None:
    """What `spec_validate`'s own pass does not look into; parts of the wrong outer shape are left
    to it (its messages name them)."""
    if "description" in raw and not isinstance(raw["description"], str):
        raise _fail("description", "must be a string")
    steps = raw.get("steps")
    if isinstance(steps, list):
        for i, body in enumerate(steps):
            if isinstance(body, Mapping):
                step_check(body, f"steps[{i}]")
    data = raw.get("data")
    dimensions = raw.get("dimensions")
    # Ids of several dimensions (tuples, `product`) are checked by the dimension rules (spec_dims).
    several = isinstance(dimensions, list) and len(dimensions) > 1
    if isinstance(data, Mapping) and len(data) == 1 and not several:
        source, body = next(iter(data.items()))
        data_check(str(source), body)
    notifications = raw.get("notifications")
    if notifications is not None:
        notifications_check(notifications)
    if "stall_after_s" in raw and not (_is_int(raw["stall_after_s"]) and raw["stall_after_s"] >= 1):
        raise _fail("stall_after_s", f"must be an integer ≥ 1 (seconds), got {raw['stall_after_s']!r}")


def split_rule_check(rule: Any, where: str) -> None:
    """A split rule, every key: the rule's name, its parameters and each value or range."""
    if not isinstance(rule, Mapping):
        raise _fail(
            where, f"a split rule is a mapping like {{rule: query, max_group_size: 50}}, got {rule!r}"
        )
    try:
        split_check(rule)
    except SplitError as exc:
        field = f"{where}.{exc.field}" if exc.field else where
        raise FieldInvalid(f"{where}: {exc}", field) from None


def step_check(body: Mapping[str, Any], where: str) -> None:
    """One step's options (its name, label list and unknown keys are `spec_validate`'s)."""
    labels = body.get("labels")
    if isinstance(labels, list):
        for j, label in enumerate(labels):
            if not isinstance(label, str):
                raise _fail(f"{where}.labels[{j}]", f"a label is a name, got {label!r}")
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise _fail(f"{where}.labels", f"label(s) {', '.join(twice)} listed twice")
    if "split" in body:
        split_rule_check(body["split"], f"{where}.split")
    if "breakpoint" in body and not isinstance(body["breakpoint"], bool):
        raise _fail(f"{where}.breakpoint", f"must be true or false, got {body['breakpoint']!r}")
    mrg = body.get("max_running_groups", 0)
    if not (_is_int(mrg) and mrg >= 0):
        raise _fail(f"{where}.max_running_groups", f"must be an integer ≥ 0 (0: no limit), got {mrg!r}")
    overrides = body.get("overrides")
    if overrides is not None:
        overrides_check(overrides, f"{where}.overrides", label_level=False)


def overrides_check(body: Any, where: str, *, label_level: bool) -> None:
    """Resource overrides and `sites` of one layer; `labels:` (step or rescue level) maps labels to
    the same, one level deep."""
    if not isinstance(body, Mapping):
        raise _fail(where, f"must be a mapping of resources, got {body!r}")
    allowed = (*RESOURCE_KEYS, "sites") if label_level else RESCUE_OVERRIDE_KEYS
    _keys_check(body, allowed, where)
    for key in RESOURCE_KEYS:
        if key in body:
            minimum = 0 if key == "priority" else 1
            if not (_is_int(body[key]) and body[key] >= minimum):
                raise _fail(f"{where}.{key}", f"must be an integer ≥ {minimum}, got {body[key]!r}")
    if body.get("sites") is not None:
        try:
            site_rule_parse(body["sites"], f"{where}.sites")
        except WorkflowInvalid as exc:
            raise FieldInvalid(exc.message, exc.field or f"{where}.sites") from None
    if not label_level and body.get("labels") is not None:
        labels = body["labels"]
        if not isinstance(labels, Mapping):
            raise _fail(f"{where}.labels", f"maps label names to resources, got {labels!r}")
        for label, layer in labels.items():
            overrides_check(layer, f"{where}.labels.{label}", label_level=True)


def data_check(source: str, body: Any) -> None:
    """One data source (`ids`, `ranges`, `file`, `query`), every key."""
    where = f"data.{source}"
    if source == "ids":
        if not isinstance(body, list) or not body:
            raise _fail(where, "must be a non-empty list of data ids")
        try:
            data_ids_normalise(body)
        except SplitError as exc:
            raise _fail(where, str(exc)) from None
    elif source == "ranges":
        if not isinstance(body, list) or not body:
            raise _fail(where, "must be a non-empty list of [first, last] pairs")
        pairs = sorted(p for p in body if isinstance(p, list) and len(p) == 2 and all(map(_is_int, p)))
        for (_, last), (first, _) in itertools.pairwise(pairs):
            if first <= last:
                raise _fail(where, f"ranges overlap at {first}: every data id must be listed once")
    elif source == "file":
        _data_file_check(body, where)
    elif source == "query":
        _data_query_check(body, where)


def _data_file_check(body: Any, where: str) -> None:
    if not isinstance(body, Mapping):
        raise _fail(where, "must be a mapping like {path: visits.csv, format: csv, column: visit}")
    _keys_check(body, DATA_FILE_KEYS, where)
    path = body.get("path")
    if not isinstance(path, str) or not path.strip():
        raise _fail(f"{where}.path", "is required: a file under the campaign data folder")
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        raise _fail(f"{where}.path", "must be relative and stay inside the campaign data folder")
    if body.get("format", "csv") not in ("csv", "json"):
        raise _fail(f"{where}.format", f"must be csv or json, got {body.get('format')!r}")
    if "column" in body and not (isinstance(body["column"], str) and body["column"]):
        raise _fail(f"{where}.column", "must be a column name")


def _data_query_check(body: Any, where: str) -> None:
    if not isinstance(body, Mapping):
        raise _fail(where, "must be a mapping like {catalog: visits, where: {band: r}}")
    _keys_check(body, DATA_QUERY_KEYS, where)
    catalogs: Mapping[str, Any] = settings.CAMPAIGNS["CATALOGS"]
    name = body.get("catalog")
    if not isinstance(name, str) or name not in catalogs:
        known = ", ".join(sorted(catalogs)) or "none configured (AILURO_CAMPAIGN_CATALOGS)"
        raise _fail(f"{where}.catalog", f"no catalog {name!r}; known: {known}")
    filters = body.get("where", {})
    if not isinstance(filters, Mapping):
        raise _fail(f"{where}.where", "must be a mapping {column: value | [values] | {min, max}}")
    allowed = set(catalogs[name].get("filters", []))
    for column, value in filters.items():
        field = f"{where}.where.{column}"
        if column not in allowed:
            raise _fail(field, f"catalog {name!r} cannot be filtered on it; allowed: {sorted(allowed)}")
        if isinstance(value, Mapping):
            bad = set(value) - {"min", "max"}
            if bad or not value or not all(_scalar(v) for v in value.values()):
                raise _fail(field, "a bound is {min: a, max: b} with scalar values")
        elif isinstance(value, list):
            if not value or not all(_scalar(v) for v in value):
                raise _fail(field, "a list of values is non-empty, of integers or strings")
        elif not _scalar(value):
            raise _fail(field, f"a value is an integer or a string, got {value!r}")


def notifications_check(body: Any) -> None:
    if not isinstance(body, Mapping):
        raise _fail("notifications", "must be a mapping {webhook, events}")
    _keys_check(body, NOTIFICATION_KEYS, "notifications")
    if "webhook" in body and not isinstance(body["webhook"], str):
        raise _fail("notifications.webhook", "must be an http(s) URL")
    events = body.get("events", [])
    if isinstance(events, list):
        for j, event in enumerate(events):
            if not isinstance(event, str):
                raise _fail(f"notifications.events[{j}]", f"an event is a name, got {event!r}")


# --- the normalised spec: what its data makes of its split rules -------------------------------


def spec_data_check(spec: Mapping[str, Any]) -> None:
    """When the data is in the spec (ids, ranges), split it with each step's rule now: a rule that
    leaves an id out, names a value no id has, or asks for more groups than ids is refused at
    creation, naming the rule's field, rather than at dry run."""
    source, body = next(iter(spec["data"].items()))
    # Ids of several dimensions are checked and cut by the dimension rules (campaigns/spec_dims.py).
    if source not in ("ids", "ranges") or len(spec.get("dimensions") or ()) > 1:
        return
    limit = int(settings.CAMPAIGNS["MAX_DATA_IDS"])
    try:
        ids = data_ids_normalise(body if source == "ids" else data_ids_from_ranges(body, limit=limit))
    except SplitError as exc:
        raise _fail(f"data.{source}", str(exc)) from None
    for i, step in enumerate(spec["steps"]):
        rule = step["split"]
        kind = rule.get("rule", "none")
        where = f"steps[{i}].split"
        if kind == "query":
            if int(rule.get("min_groups", 1)) > len(ids):
                raise _fail(f"{where}.min_groups", f"is more than the {len(ids)} data ids")
            continue
        if kind in ("values", "ranges"):
            try:
                split(ids, rule)
            except SplitError as exc:
                raise _fail(f"{where}.{kind}", str(exc)) from None


# --- a rescue's body -------------------------------------------------------------------------


def rescue_check(overrides: Any, selection: Any) -> None:
    """A rescue's `overrides` ({memory_mb, walltime_s, cores, disk_mb, priority, sites, labels})
    and `selection` ({error, label, site, data_min, data_max}), every key."""
    if overrides is not None:
        overrides_check(overrides, "overrides", label_level=False)
    if selection is None:
        return
    if not isinstance(selection, Mapping):
        raise _fail("selection", f"must be a mapping of {', '.join(SELECTION_KEYS)}")
    _keys_check(selection, SELECTION_KEYS, "selection")
    for key in ("error", "label", "site"):
        if key in selection and selection[key] is not None and not isinstance(selection[key], str):
            raise _fail(f"selection.{key}", f"must be a string, got {selection[key]!r}")
    for key in ("data_min", "data_max"):
        if selection.get(key) is not None and not _scalar(selection[key]):
            raise _fail(f"selection.{key}", f"a data id is an integer or a string, got {selection[key]!r}")
    low, high = selection.get("data_min"), selection.get("data_max")
    if low is not None and high is not None:
        if type(low) is not type(high):
            raise _fail("selection.data_max", "data_min and data_max must be of one type")
        if low > high:
            raise _fail("selection.data_max", f"is below data_min {low!r}")
