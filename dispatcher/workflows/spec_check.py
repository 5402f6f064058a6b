"""A workflow spec's sections read and checked: every key known, every value of the right type,
each error naming its field (`labels.isr.resources.memory_mb`). `spec.py` expands the result into
DAG nodes; the format is docs/user-guide/workflows.md.

Pure (no ORM). Settings come in layers (builtin < defaults < label < job < override), merged by
`layers_merge`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatcher.workflows.clusters import ClusterRule, cluster_rules_parse
from dispatcher.workflows.dag import WorkflowInvalid
from dispatcher.workflows.spec_size import (
    MAX_LABEL_AXES,
    RANGE_BOUND,
    product_len,
    template_fields,
    values_len,
)
from dispatcher.workflows.spec_text import type_name

RESOURCE_KEYS = ("memory_mb", "cores", "walltime_s", "disk_mb")
BUILTIN_RESOURCES = {"memory_mb": 2000, "cores": 1, "walltime_s": 3600, "disk_mb": 1000}
SETTINGS_KEYS = frozenset(
    {"resources", "environment", "container_image", "priority", "max_attempts", "sites"}
)
SITE_KEYS = frozenset({"include", "exclude"})
# Bounds of one `sites` entry: enough for any real site list, small enough to test per queue.
MAX_SITE_PATTERNS = 100
MAX_SITE_PATTERN_CHARS = 128
TOP_KEYS = frozenset(
    {"name", "description", "priority", "defaults", "labels", "overrides", "dimensions", "jobs", "cluster"}
)
LABEL_KEYS = SETTINGS_KEYS | {
    "command",
    "name",
    "over",
    "data_ids",
    "after",
    "retry_policy",
    "failure_budget",
    "learn_requests",
}
JOB_KEYS = frozenset(
    {
        "name",
        "label",
        "command",
        "depends_on",
        "resources",
        "environment",
        "container_image",
        "data_id",
        "files",
        "priority",
        "final",
    }
)
FILE_KEYS = frozenset({"lfn", "role", "dataset", "scope", "guid", "size", "checksum", "location"})
FILE_ROLES = frozenset({"input", "output", "log", "pseudo"})


def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise WorkflowInvalid(f"{where} must be {what}, got {type_name(value)}", field=where)
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def unknown_keys(mapping: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if mapping.keys() <= allowed:
        return
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        label = f"{where}.{unknown[0]}" if where else unknown[0]
        raise WorkflowInvalid(
            f"unknown key {unknown[0]!r} in {where or 'the spec'}; allowed: {', '.join(sorted(allowed))}",
            field=label,
        )


def positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WorkflowInvalid(f"{where} must be a positive integer, got {value!r}", field=where)
    return value


@dataclass
class SettingsLayer:
    """One layer of settings (defaults, a label, a job, an override); None means not set here."""

    resources: dict[str, int] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    container_image: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    # `include` and/or `exclude` as this layer sets them; a later layer replaces each key on its own.
    sites: dict[str, tuple[str, ...]] = field(default_factory=dict)


def site_rule_parse(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    """`{include: [...], exclude: [...]}` → the keys given, each a tuple of queue or site name
    patterns (`SiteRule` once the layers are merged)."""
    expect(raw, dict, where, "a mapping with include and/or exclude")
    unknown_keys(raw, SITE_KEYS, where)
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("include", "exclude"):
        if key not in raw:
            continue
        value = raw[key] if raw[key] is not None else []
        expect(value, list, f"{where}.{key}", "a list of queue or site names")
        if len(value) > MAX_SITE_PATTERNS:
            raise WorkflowInvalid(
                f"{where}.{key} has {len(value)} entries; at most {MAX_SITE_PATTERNS}", field=f"{where}.{key}"
            )
        for i, pattern in enumerate(value):
            if type(pattern) is not str or not pattern.strip() or len(pattern) > MAX_SITE_PATTERN_CHARS:
                raise WorkflowInvalid(
                    f"{where}.{key}[{i}] must be a queue or site name (wildcards *), "
                    f"1–{MAX_SITE_PATTERN_CHARS} characters",
                    field=f"{where}.{key}[{i}]",
                )
        lists[key] = tuple(p.strip() for p in value)
    return lists


def settings_layer(mapping: Mapping[str, Any], where: str) -> SettingsLayer:
    result = SettingsLayer()
    resources = mapping.get("resources")
    if resources is not None:
        expect(resources, dict, f"{where}.resources", "a mapping")
        unknown_keys(resources, frozenset(RESOURCE_KEYS), f"{where}.resources")
        for key, value in resources.items():
            result.resources[key] = positive_int(value, f"{where}.resources.{key}")
    environment = mapping.get("environment")
    if environment is not None:
        expect(environment, dict, f"{where}.environment", "a mapping")
        for key, value in environment.items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise WorkflowInvalid(
                    f"{where}.environment.{key} must be a string or number",
                    field=f"{where}.environment.{key}",
                )
            result.environment[key] = str(value)
    if mapping.get("container_image") is not None:
        result.container_image = expect(
            mapping["container_image"], str, f"{where}.container_image", "a string"
        )
    if mapping.get("priority") is not None:
        result.priority = expect(mapping["priority"], int, f"{where}.priority", "an integer")
    if mapping.get("max_attempts") is not None:
        result.max_attempts = positive_int(mapping["max_attempts"], f"{where}.max_attempts")
    if mapping.get("sites") is not None:
        result.sites = site_rule_parse(mapping["sites"], f"{where}.sites")
    return result


def layers_merge(*layers: SettingsLayer) -> SettingsLayer:
    """Later layers win; environments merge key by key."""
    merged = SettingsLayer(resources=dict(BUILTIN_RESOURCES))
    for layer in layers:
        merged.resources.update(layer.resources)
        merged.environment = {**merged.environment, **layer.environment}
        if layer.container_image is not None:
            merged.container_image = layer.container_image
        if layer.priority is not None:
            merged.priority = layer.priority
        if layer.max_attempts is not None:
            merged.max_attempts = layer.max_attempts
        merged.sites = {**merged.sites, **layer.sites}
    return merged


def dimension_values(spec: Any, where: str) -> Sequence[Any]:
    """A dimension's values: a list of scalars, or {range: [start, stop(, step)]} (stop excluded)."""
    if isinstance(spec, list):
        for index, item in enumerate(spec):
            if not isinstance(item, str | int) or isinstance(item, bool):
                raise WorkflowInvalid(
                    f"{where}[{index}] must be a string or integer", field=f"{where}[{index}]"
                )
        if len(set(spec)) != len(spec):
            raise WorkflowInvalid(f"{where} lists a value twice", field=where)
        return spec
    if isinstance(spec, dict) and set(spec) == {"range"}:
        bounds = spec["range"]
        if (
            not isinstance(bounds, list)
            or len(bounds) not in (2, 3)
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
            or (len(bounds) == 3 and bounds[2] == 0)
        ):
            raise WorkflowInvalid(
                f"{where}.range must be [start, stop] or [start, stop, step] integers (stop excluded, step not 0)",
                field=f"{where}.range",
            )
        if not all(-RANGE_BOUND <= b < RANGE_BOUND for b in bounds):
            raise WorkflowInvalid(
                f"{where}.range bounds must be 64-bit integers (-2**63 to 2**63 - 1)", field=f"{where}.range"
            )
        return range(*bounds)
    raise WorkflowInvalid(f"{where} must be a list of values or {{range: [start, stop]}}", field=where)


def template_check(template: str, allowed: Sequence[str], where: str) -> None:
    """Every field names an allowed key with a bounded width (`spec_size.template_fields`)."""
    template_fields(template, allowed, where)


_ID_SCALARS = (str, int, float, bool, type(None))


@dataclass
class CompactLabel:
    """A label given as a command template: its data-id keys, how many jobs it makes, and the data
    ids themselves, made one at a time as the label is expanded. `axes` (the `over` form) or
    `ids` (the `data_ids` form) is what the size checks count from."""

    label: str
    keys: list[str]
    count: int
    data_ids: Iterator[dict[str, Any]]
    where: str
    axes: dict[str, Sequence[Any]] | None = None
    ids: list[dict[str, Any]] | None = None

    @property
    def size_field(self) -> str:
        """The field a size refusal names: where the label's fan-out is given."""
        return f"{self.where}.data_ids" if self.ids is not None else f"{self.where}.over"


def compact_label(
    label: str, entry: Mapping[str, Any], dimensions: Mapping[str, Sequence[Any]]
) -> CompactLabel:
    where = f"labels.{label}"
    if "over" in entry and "data_ids" in entry:
        raise WorkflowInvalid(f"{where}: give either over or data_ids, not both", field=where)
    if "data_ids" in entry:
        ids = entry["data_ids"]
        expect(ids, list, f"{where}.data_ids", "a list of mappings")
        keys: list[str] = []
        for index, item in enumerate(ids):
            expect(item, dict, f"{where}.data_ids[{index}]", "a mapping")
            if index == 0:
                keys = list(item)
            elif list(item) != keys and set(item) != set(keys):
                raise WorkflowInvalid(
                    f"{where}.data_ids[{index}] has keys {sorted(item)}; the first one has {sorted(keys)}",
                    field=f"{where}.data_ids[{index}]",
                )
            for key, value in item.items():
                # Scalars only: a value is rendered into every template that names it, and a
                # nested (YAML-aliased) structure could render to any size.
                if type(value) not in _ID_SCALARS:
                    raise WorkflowInvalid(
                        f"{where}.data_ids[{index}].{key} must be a string or number, got {type_name(value)}",
                        field=f"{where}.data_ids[{index}].{key}",
                    )
        return CompactLabel(label, keys, len(ids), iter([dict(i) for i in ids]), where, ids=ids)
    over = entry.get("over") or []
    axes: list[tuple[str, Sequence[Any]]] = []
    if isinstance(over, list):
        for key in over:
            expect(key, str, f"{where}.over", "a list of dimension names")
            if key not in dimensions:
                raise WorkflowInvalid(
                    f"{where}.over names dimension {key!r}, which is not in dimensions", field=f"{where}.over"
                )
            axes.append((key, dimensions[key]))
    elif isinstance(over, dict):
        axes = [(key, dimension_values(spec, f"{where}.over.{key}")) for key, spec in over.items()]
    else:
        raise WorkflowInvalid(
            f"{where}.over must be a list of dimension names or a mapping", field=f"{where}.over"
        )
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise WorkflowInvalid(f"{where}.over names a dimension twice", field=f"{where}.over")
    if len(keys) > MAX_LABEL_AXES:
        raise WorkflowInvalid(
            f"{where}.over names {len(keys)} dimensions; at most {MAX_LABEL_AXES}", field=f"{where}.over"
        )
    count = product_len(values_len(values) for _, values in axes)
    return CompactLabel(label, keys, count, _product(keys, [v for _, v in axes]), where, axes=dict(axes))


def _product(keys: list[str], axes: list[Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """The data ids of an `over` label, made one at a time once it is iterated (a generator, so
    not even itertools.product's copy of each axis is made before the caps have been checked)."""
    for combo in itertools.product(*axes):
        yield dict(zip(keys, combo, strict=True))


def files_check(raw: Any, where: str) -> list[dict[str, Any]]:
    expect(raw, list, where, "a list of files")
    files: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        expect(item, dict, at, "a mapping")
        unknown_keys(item, FILE_KEYS, at)
        expect(item.get("lfn"), str, f"{at}.lfn", "a string")
        role = item.get("role", "input")
        if role not in FILE_ROLES:
            raise WorkflowInvalid(
                f"{at}.role must be one of {', '.join(sorted(FILE_ROLES))}", field=f"{at}.role"
            )
        files.append({**item, "role": role})
    return files


@dataclass
class SpecSections:
    """A spec's top-level sections, checked; the explicit jobs are still raw (checked as they are
    expanded, in one pass), the compact labels are counted but not expanded."""

    name: str
    priority: int
    defaults: SettingsLayer
    labels: Mapping[str, Mapping[str, Any]]  # the `labels` section as given
    overrides: Mapping[str, Mapping[str, Any]]  # the `overrides` section as given
    label_layers: dict[str, SettingsLayer]
    override_layers: dict[str, SettingsLayer]
    cluster: list[ClusterRule]
    jobs: list[Any]
    compact: list[CompactLabel]

    def job_count(self) -> int:
        return len(self.jobs) + sum(c.count for c in self.compact)

    def resolve(self, label: str, own: SettingsLayer | None = None) -> SettingsLayer:
        """A job's settings: builtin < defaults < its label's < its own < its label's override."""
        return layers_merge(
            self.defaults,
            self.label_layers.get(label, _NOTHING),
            own or _NOTHING,
            self.override_layers.get(label, _NOTHING),
        )


_NOTHING = SettingsLayer()


def spec_sections(data: Mapping[str, Any]) -> SpecSections:
    """Check the top-level keys and read `name`, `priority`, `defaults`, `labels`, `overrides`,
    `dimensions`, `cluster` and the `jobs` list; count what each compact label fans out to."""
    expect(data, dict, "spec", "a mapping")
    unknown_keys(data, TOP_KEYS, "")
    name = data.get("name", "workflow")
    expect(name, str, "name", "a string")
    if not name.strip() or len(name) > 200:
        raise WorkflowInvalid("name must be 1 to 200 characters", field="name")
    priority = data.get("priority", 500)
    expect(priority, int, "priority", "an integer")
    # In the order of the spec's description, so a spec with several mistakes hears of the first.
    defaults_raw = _section(data, "defaults", "a mapping")
    unknown_keys(defaults_raw, SETTINGS_KEYS, "defaults")
    defaults = settings_layer(defaults_raw, "defaults")
    labels = _section(data, "labels", "a mapping")
    overrides = _section(data, "overrides", "a mapping")
    label_layers = _layers(labels, "labels", LABEL_KEYS)
    override_layers = _layers(overrides, "overrides", SETTINGS_KEYS)
    dimensions = {
        key: dimension_values(spec, f"dimensions.{key}")
        for key, spec in _section(data, "dimensions", "a mapping").items()
    }
    cluster = cluster_rules_parse(data.get("cluster"))
    jobs = data.get("jobs") or []
    expect(jobs, list, "jobs", "a list")
    return SpecSections(
        name=name,
        priority=priority,
        defaults=defaults,
        labels=labels,
        overrides=overrides,
        label_layers=label_layers,
        override_layers=override_layers,
        cluster=cluster,
        jobs=jobs,
        compact=_compact_labels(labels, dimensions),
    )


def _section(data: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    value = data.get(key) or {}
    expect(value, dict, key, what)
    return value


def _layers(section: Mapping[str, Any], name: str, allowed: frozenset[str]) -> dict[str, SettingsLayer]:
    layers: dict[str, SettingsLayer] = {}
    for label, entry in section.items():
        where = f"{name}.{label}"
        expect(entry, dict, where, "a mapping")
        unknown_keys(entry, allowed, where)
        layers[label] = settings_layer(entry, where)
    return layers


def _compact_labels(
    labels: Mapping[str, Mapping[str, Any]], dimensions: Mapping[str, Sequence[Any]]
) -> list[CompactLabel]:
    """The labels with a command template, each with its data-id keys and job count; a label
    without one may not use the compact keys."""
    compact: list[CompactLabel] = []
    for label, entry in labels.items():
        if "command" in entry:
            compact.append(compact_label(label, entry, dimensions))
            continue
        for key in ("over", "data_ids", "after", "name"):
            if key in entry:
                raise WorkflowInvalid(
                    f"labels.{label}.{key} needs a command template in labels.{label}.command",
                    field=f"labels.{label}.command",
                )
    return compact
