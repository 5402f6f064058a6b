"""Workflow specs: text → data → DAG nodes, and back (docs/user-guide/workflows.md describes the
format; docs/workflow-spec.schema.json is its JSON Schema).

A spec is one mapping with these keys, all optional except that some job must come out of it:

- `name`, `priority`, `description`;
- `defaults`: settings for every job (`resources`, `environment`, `container_image`, `priority`,
  `max_attempts`, `sites`: `{include: [...], exclude: [...]}` queue or site names with `*`
  wildcards, PanDA's includedSite / excludedSite);
- `labels`: per label, settings that are the label's defaults (a job's own values win), and for
  the compact form a `command` template fanned out `over` dimensions (or a `data_ids` list), with
  `after` naming parent labels matched by shared data-id keys;
- `overrides`: per label, settings that win even over a job's own values;
- `dimensions`: named lists or ranges of data-id values the compact labels fan out over;
- `jobs`: the explicit form, one entry per job (`name`, `label`, `command`, `depends_on`,
  `resources`, `environment`, `container_image`, `data_id`, `files`, `priority`);
- `cluster`: `{label: N}` packs N jobs of the label into one payload run in sequence.

Everything here is pure (no ORM) and bounded: counts are checked against the caps before a list
is expanded.
"""

from __future__ import annotations

import itertools
import json
import math
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from dispatcher.brokerage import SiteRule
from dispatcher.workflows.dag import (
    LabelSettings,
    NewJob,
    WorkflowInvalid,
    WorkflowTooLarge,
    dag_check_caps,
)

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
LABEL_KEYS = SETTINGS_KEYS | {"command", "name", "over", "data_ids", "after", "retry_policy"}
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
    }
)
FILE_KEYS = frozenset({"lfn", "role", "dataset", "scope", "guid", "size", "checksum", "location"})
FILE_ROLES = frozenset({"input", "output", "log", "pseudo"})


@dataclass
class ParsedSpec:
    name: str
    priority: int
    jobs: list[NewJob]
    labels: dict[str, LabelSettings] = field(default_factory=dict)
    cluster: dict[str, int] = field(default_factory=dict)


# --- text → data -----------------------------------------------------------------------------

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_BaseLoader):
    """Safe YAML without implicit timestamps: `2024-01-01` stays a string, as JSON would keep it."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def spec_load(raw: bytes | str, *, content_type: str = "", max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Parse a spec body (YAML or JSON) into plain data, with the position of any syntax error.

    1. Refuse bodies over `max_bytes` (413) before decoding them.
    2. JSON when the content type says so or the text opens with `{`; YAML otherwise (and when
       text opening with `{` is not JSON, since YAML flow style opens the same way).
    3. The result must be a mapping of JSON types no deeper than `max_depth`.
    """
    size = len(raw)
    if size > max_bytes:
        raise WorkflowTooLarge(f"the spec is {size} bytes; the limit is {max_bytes} (AILURO_MAX_SPEC_BYTES)")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkflowInvalid(f"the spec is not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        text = text[1:]
    is_json = "json" in content_type.lower()
    data: Any
    from_json = False
    if is_json or text.lstrip().startswith("{"):
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
            from_json = True
        except RecursionError:
            raise WorkflowInvalid(
                f"the spec nests deeper than {max_depth} levels (AILURO_MAX_JSON_DEPTH)"
            ) from None
        except json.JSONDecodeError as exc:
            if is_json:
                raise WorkflowInvalid(
                    f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    line=exc.lineno,
                    column=exc.colno,
                ) from None
            data = _yaml_load(text)
    else:
        data = _yaml_load(text)
    if not isinstance(data, dict):
        raise WorkflowInvalid(f"the spec must be a mapping at the top level, got {_type_name(data)}")
    _check_plain(data, max_depth, scalars=not from_json)
    return data


def _refuse_constant(name: str) -> Any:
    raise WorkflowInvalid(f"{name} is not a number a spec may hold")


def _yaml_load(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        where = f" at line {line}, column {column}" if mark else ""
        raise WorkflowInvalid(f"malformed YAML{where}: {problem}", line=line, column=column) from None
    except yaml.YAMLError as exc:
        raise WorkflowInvalid(f"malformed YAML: {exc}") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_SCALARS = (str, int, bool, type(None))


def _check_plain(data: Any, max_depth: int, *, scalars: bool = True) -> None:
    """Only JSON types, finite numbers, string keys, at most `max_depth` levels.

    Level by level over containers only, so a 100,000-job spec costs one pass over its dicts and
    lists. JSON text needs no scalar checks (json.loads makes nothing else, and NaN is refused
    while parsing); YAML does (`!!binary`, `!!set`, `.nan`). Shared YAML aliases are visited once.
    """
    level: list[Any] = [data]
    depth = 1
    seen: set[int] = set()
    while level:
        if depth > max_depth:
            raise WorkflowInvalid(f"the spec nests deeper than {max_depth} levels (AILURO_MAX_JSON_DEPTH)")
        below: list[Any] = []
        for container in level:
            if id(container) in seen:
                continue
            seen.add(id(container))
            items = container.values() if type(container) is dict else container
            if scalars and type(container) is dict:
                for key in container:
                    if type(key) is not str:
                        raise WorkflowInvalid(f"keys must be strings, got {key!r}")
            for value in items:
                kind = type(value)
                if kind is dict or kind is list:
                    below.append(value)
                elif scalars and not isinstance(value, _SCALARS):
                    if kind is float:
                        if not math.isfinite(value):
                            raise WorkflowInvalid(f"{value!r} is not a finite number")
                    else:
                        raise WorkflowInvalid(f"unsupported value of type {kind.__name__}")
        level = below
        depth += 1


# --- data → DAG --------------------------------------------------------------------------------


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise WorkflowInvalid(f"{where} must be {what}, got {_type_name(value)}", field=where)
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _unknown_keys(mapping: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if mapping.keys() <= allowed:
        return
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        label = f"{where}.{unknown[0]}" if where else unknown[0]
        raise WorkflowInvalid(
            f"unknown key {unknown[0]!r} in {where or 'the spec'}; allowed: {', '.join(sorted(allowed))}",
            field=label,
        )


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WorkflowInvalid(f"{where} must be a positive integer, got {value!r}", field=where)
    return value


@dataclass
class _Settings:
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
    _expect(raw, dict, where, "a mapping with include and/or exclude")
    _unknown_keys(raw, SITE_KEYS, where)
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("include", "exclude"):
        if key not in raw:
            continue
        value = raw[key] if raw[key] is not None else []
        _expect(value, list, f"{where}.{key}", "a list of queue or site names")
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


def _settings(mapping: Mapping[str, Any], where: str) -> _Settings:
    result = _Settings()
    resources = mapping.get("resources")
    if resources is not None:
        _expect(resources, dict, f"{where}.resources", "a mapping")
        _unknown_keys(resources, frozenset(RESOURCE_KEYS), f"{where}.resources")
        for key, value in resources.items():
            result.resources[key] = _positive_int(value, f"{where}.resources.{key}")
    environment = mapping.get("environment")
    if environment is not None:
        _expect(environment, dict, f"{where}.environment", "a mapping")
        for key, value in environment.items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise WorkflowInvalid(
                    f"{where}.environment.{key} must be a string or number",
                    field=f"{where}.environment.{key}",
                )
            result.environment[key] = str(value)
    if mapping.get("container_image") is not None:
        result.container_image = _expect(
            mapping["container_image"], str, f"{where}.container_image", "a string"
        )
    if mapping.get("priority") is not None:
        result.priority = _expect(mapping["priority"], int, f"{where}.priority", "an integer")
    if mapping.get("max_attempts") is not None:
        result.max_attempts = _positive_int(mapping["max_attempts"], f"{where}.max_attempts")
    if mapping.get("sites") is not None:
        result.sites = site_rule_parse(mapping["sites"], f"{where}.sites")
    return result


def _merge(*layers: _Settings) -> _Settings:
    """Later layers win; environments merge key by key."""
    merged = _Settings(resources=dict(BUILTIN_RESOURCES))
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


def _values(spec: Any, where: str) -> Sequence[Any]:
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
        return range(*bounds)
    raise WorkflowInvalid(f"{where} must be a list of values or {{range: [start, stop]}}", field=where)


_FORMATTER = string.Formatter()


def _template_fields(template: str, allowed: Sequence[str], where: str) -> None:
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise WorkflowInvalid(f"{where} is not a valid template: {exc}", field=where) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed:
            raise WorkflowInvalid(
                f"{where} uses {{{name}}}; the data-id keys of this label are: {', '.join(allowed) or 'none'}",
                field=where,
            )
        if spec and "{" in spec:
            raise WorkflowInvalid(f"{where}: nested template fields are not supported", field=where)
        del conversion


@dataclass
class _CompactLabel:
    label: str
    keys: list[str]
    count: int
    data_ids: Iterator[dict[str, Any]] | None
    where: str


def spec_parse(data: Mapping[str, Any], *, max_jobs: int, max_edges: int) -> ParsedSpec:
    """Turn a loaded spec into DAG nodes (in spec order: explicit jobs, then compact labels).

    1. Check top-level keys and read `defaults`, `labels`, `overrides`, `dimensions`, `cluster`.
    2. Count the jobs every compact label fans out to (product of its dimensions) and refuse the
       spec over `max_jobs` before expanding anything.
    3. Expand explicit jobs, then compact labels, resolving settings builtin < defaults < label <
       job < override.
    4. Wire compact `after` dependencies by shared data-id keys, counting edges against
       `max_edges` as they are made.
    Structural checks of the result (names, cycles) are `dag_validate`'s.
    """
    _expect(data, dict, "spec", "a mapping")
    _unknown_keys(data, TOP_KEYS, "")
    name = data.get("name", "workflow")
    _expect(name, str, "name", "a string")
    if not name.strip() or len(name) > 200:
        raise WorkflowInvalid("name must be 1 to 200 characters", field="name")
    priority = data.get("priority", 500)
    _expect(priority, int, "priority", "an integer")

    defaults_raw = data.get("defaults") or {}
    _expect(defaults_raw, dict, "defaults", "a mapping")
    _unknown_keys(defaults_raw, SETTINGS_KEYS, "defaults")
    defaults = _settings(defaults_raw, "defaults")

    labels_raw = data.get("labels") or {}
    _expect(labels_raw, dict, "labels", "a mapping")
    overrides_raw = data.get("overrides") or {}
    _expect(overrides_raw, dict, "overrides", "a mapping")
    label_layers: dict[str, _Settings] = {}
    override_layers: dict[str, _Settings] = {}
    for label, entry in labels_raw.items():
        where = f"labels.{label}"
        _expect(entry, dict, where, "a mapping")
        _unknown_keys(entry, LABEL_KEYS, where)
        label_layers[label] = _settings(entry, where)
    for label, entry in overrides_raw.items():
        where = f"overrides.{label}"
        _expect(entry, dict, where, "a mapping")
        _unknown_keys(entry, SETTINGS_KEYS, where)
        override_layers[label] = _settings(entry, where)

    dimensions_raw = data.get("dimensions") or {}
    _expect(dimensions_raw, dict, "dimensions", "a mapping")
    dimensions = {key: _values(spec, f"dimensions.{key}") for key, spec in dimensions_raw.items()}

    cluster_raw = data.get("cluster") or {}
    _expect(cluster_raw, dict, "cluster", "a mapping of label to a number of jobs")
    cluster = {label: _positive_int(n, f"cluster.{label}") for label, n in cluster_raw.items()}

    jobs_raw = data.get("jobs") or []
    _expect(jobs_raw, list, "jobs", "a list")

    # 2. Count before expanding.
    compact: list[_CompactLabel] = []
    for label, entry in labels_raw.items():
        if "command" in entry:
            compact.append(_compact_label(label, entry, dimensions))
        else:
            for key in ("over", "data_ids", "after", "name"):
                if key in entry:
                    raise WorkflowInvalid(
                        f"labels.{label}.{key} needs a command template in labels.{label}.command",
                        field=f"labels.{label}.command",
                    )
    total = len(jobs_raw) + sum(c.count for c in compact)
    dag_check_caps(jobs=total, edges=0, max_jobs=max_jobs, max_edges=max_edges)

    def resolve(label: str, own: _Settings) -> _Settings:
        return _merge(
            defaults, label_layers.get(label, _Settings()), own, override_layers.get(label, _Settings())
        )

    jobs: list[NewJob] = []
    edges = 0
    # 3a. Explicit jobs. Most carry no settings of their own: they share their label's resolved
    # settings (computed once per label) instead of merging four layers per job.
    plain: dict[str, _Settings] = {}
    for index, entry in enumerate(jobs_raw):
        if type(entry) is not dict:
            _expect(entry, dict, f"jobs[{index}]", "a mapping")
        if not entry.keys() <= JOB_KEYS:
            _unknown_keys(entry, JOB_KEYS, f"jobs[{index}]")
        job_name = entry.get("name")
        label = entry.get("label")
        command = entry.get("command")
        depends = entry.get("depends_on") or []
        data_id = entry.get("data_id") or {}
        if type(job_name) is not str or type(label) is not str or type(command) is not str:
            for key, value in (("name", job_name), ("label", label), ("command", command)):
                _expect(value, str, f"jobs[{index}].{key}", "a string")
        if type(depends) is not list or not all(type(p) is str for p in depends):
            raise WorkflowInvalid(
                f"jobs[{index}].depends_on must be a list of job names", field=f"jobs[{index}].depends_on"
            )
        if type(data_id) is not dict:
            _expect(data_id, dict, f"jobs[{index}].data_id", "a mapping")
        edges += len(depends)
        if edges > max_edges:
            dag_check_caps(jobs=total, edges=edges, max_jobs=max_jobs, max_edges=max_edges)
        files = _files(entry["files"], f"jobs[{index}].files") if entry.get("files") else []
        if entry.keys() & SETTINGS_KEYS:
            s = resolve(label, _settings(entry, f"jobs[{index}]"))
        else:
            s = plain.get(label) or plain.setdefault(label, resolve(label, _Settings()))
        jobs.append(_new_job(job_name, label, command, depends, s, data_id, files))

    # 3b. Compact labels.
    by_label: dict[str, list[NewJob]] = {}
    for c in compact:
        entry = labels_raw[c.label]
        command_t = entry["command"]
        _expect(command_t, str, f"{c.where}.command", "a string")
        allowed = [*c.keys, "label"]
        _template_fields(command_t, allowed, f"{c.where}.command")
        name_t = entry.get("name")
        if name_t is not None:
            _expect(name_t, str, f"{c.where}.name", "a string")
            _template_fields(name_t, allowed, f"{c.where}.name")
        s = resolve(c.label, _Settings())
        r = s.resources
        memory_mb, cores, walltime_s, disk_mb = r["memory_mb"], r["cores"], r["walltime_s"], r["disk_mb"]
        environment, image, job_priority = s.environment, s.container_image or "", s.priority
        made: list[NewJob] = []
        assert c.data_ids is not None  # noqa: S101  (set by _compact_label)
        label_name = c.label
        keys = c.keys
        for data_id in c.data_ids:
            values = {**data_id, "label": label_name}
            if name_t is not None:
                job_name = name_t.format_map(values)
            else:
                job_name = "_".join([label_name, *[str(data_id[k]) for k in keys]])
            # Jobs of a label share one environment mapping: nothing downstream mutates it.
            made.append(
                NewJob(
                    job_name,
                    label_name,
                    command_t.format_map(values),
                    [],
                    memory_mb,
                    cores,
                    walltime_s,
                    disk_mb,
                    job_priority,
                    environment,
                    image,
                    data_id,
                    (),
                )
            )
        by_label.setdefault(c.label, []).extend(made)
        jobs.extend(made)

    # 4. `after`: match parents by shared data-id keys.
    explicit_by_label: dict[str, list[NewJob]] = {}
    for job in jobs[: len(jobs_raw)]:
        explicit_by_label.setdefault(job.label, []).append(job)
    keys_of = {c.label: c.keys for c in compact}
    for c in compact:
        after = labels_raw[c.label].get("after") or []
        if isinstance(after, str):
            after = [after]
        _expect(after, list, f"{c.where}.after", "a list of labels")
        children = by_label.get(c.label, [])
        parent_lists: dict[str, list[str]] = {child.name: [] for child in children}
        for parent_label in after:
            _expect(parent_label, str, f"{c.where}.after", "a list of labels")
            parents = by_label.get(parent_label) or explicit_by_label.get(parent_label)
            if not parents:
                raise WorkflowInvalid(
                    f"label {c.label!r} comes after {parent_label!r}, which has no jobs",
                    field=f"{c.where}.after",
                )
            parent_keys = keys_of.get(parent_label) or sorted({k for p in parents for k in (p.data_id or {})})
            shared = [k for k in c.keys if k in parent_keys]
            by_keys: dict[tuple[Any, ...], list[str]] = {}
            for p in parents:
                pid = p.data_id or {}
                by_keys.setdefault(tuple(pid.get(k) for k in shared), []).append(p.name)
            for child in children:
                cid = child.data_id or {}
                matched = by_keys.get(tuple(cid.get(k) for k in shared))
                if not matched:
                    keys_text = ", ".join(f"{k}={cid.get(k)!r}" for k in shared)
                    raise WorkflowInvalid(
                        f"job {child.name!r} (label {c.label}) matches no job of label {parent_label!r} "
                        f"on {keys_text}",
                        field=f"{c.where}.after",
                    )
                parent_lists[child.name].extend(matched)
                edges += len(matched)
                if edges > max_edges:
                    dag_check_caps(jobs=total, edges=edges, max_jobs=max_jobs, max_edges=max_edges)
        for child in children:
            child.parents = parent_lists[child.name]

    labels: dict[str, LabelSettings] = {}
    for job in jobs:
        if job.label not in labels:
            s = _merge(
                defaults,
                label_layers.get(job.label, _Settings()),
                override_layers.get(job.label, _Settings()),
            )
            retry_policy = (labels_raw.get(job.label) or {}).get("retry_policy") or {}
            _expect(retry_policy, dict, f"labels.{job.label}.retry_policy", "a mapping")
            labels[job.label] = LabelSettings(
                memory_mb=s.resources["memory_mb"],
                cores=s.resources["cores"],
                walltime_s=s.resources["walltime_s"],
                disk_mb=s.resources["disk_mb"],
                max_attempts=s.max_attempts,
                retry_policy=retry_policy,
                sites=SiteRule.of(s.sites.get("include"), s.sites.get("exclude")),
            )
    for label in (*labels_raw, *overrides_raw, *cluster):
        if label not in labels:
            section = (
                "labels" if label in labels_raw else "overrides" if label in overrides_raw else "cluster"
            )
            raise WorkflowInvalid(
                f"{section}.{label} names a label that has no jobs", field=f"{section}.{label}"
            )
    return ParsedSpec(name=name, priority=priority, jobs=jobs, labels=labels, cluster=cluster)


def _compact_label(
    label: str, entry: Mapping[str, Any], dimensions: Mapping[str, Sequence[Any]]
) -> _CompactLabel:
    where = f"labels.{label}"
    if "over" in entry and "data_ids" in entry:
        raise WorkflowInvalid(f"{where}: give either over or data_ids, not both", field=where)
    if "data_ids" in entry:
        ids = entry["data_ids"]
        _expect(ids, list, f"{where}.data_ids", "a list of mappings")
        keys: list[str] = []
        for index, item in enumerate(ids):
            _expect(item, dict, f"{where}.data_ids[{index}]", "a mapping")
            if index == 0:
                keys = list(item)
            elif list(item) != keys and set(item) != set(keys):
                raise WorkflowInvalid(
                    f"{where}.data_ids[{index}] has keys {sorted(item)}; the first one has {sorted(keys)}",
                    field=f"{where}.data_ids[{index}]",
                )
        return _CompactLabel(label, keys, len(ids), iter([dict(i) for i in ids]), where)
    over = entry.get("over") or []
    axes: list[tuple[str, Sequence[Any]]] = []
    if isinstance(over, list):
        for key in over:
            _expect(key, str, f"{where}.over", "a list of dimension names")
            if key not in dimensions:
                raise WorkflowInvalid(
                    f"{where}.over names dimension {key!r}, which is not in dimensions", field=f"{where}.over"
                )
            axes.append((key, dimensions[key]))
    elif isinstance(over, dict):
        axes = [(key, _values(spec, f"{where}.over.{key}")) for key, spec in over.items()]
    else:
        raise WorkflowInvalid(
            f"{where}.over must be a list of dimension names or a mapping", field=f"{where}.over"
        )
    keys = [key for key, _ in axes]
    count = math.prod(len(values) for _, values in axes)
    product = (dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes)))
    return _CompactLabel(label, keys, count, product, where)


def _files(raw: Any, where: str) -> list[dict[str, Any]]:
    _expect(raw, list, where, "a list of files")
    files: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        _expect(item, dict, at, "a mapping")
        _unknown_keys(item, FILE_KEYS, at)
        _expect(item.get("lfn"), str, f"{at}.lfn", "a string")
        role = item.get("role", "input")
        if role not in FILE_ROLES:
            raise WorkflowInvalid(
                f"{at}.role must be one of {', '.join(sorted(FILE_ROLES))}", field=f"{at}.role"
            )
        files.append({**item, "role": role})
    return files


def _new_job(
    name: str,
    label: str,
    command: str,
    parents: Sequence[str],
    s: _Settings,
    data_id: Mapping[str, Any],
    files: list[dict[str, Any]],
) -> NewJob:
    r = s.resources
    return NewJob(
        name,
        label,
        command,
        parents,
        r["memory_mb"],
        r["cores"],
        r["walltime_s"],
        r["disk_mb"],
        s.priority,
        s.environment,
        s.container_image or "",
        data_id,
        files,
    )


# --- DAG → data --------------------------------------------------------------------------------


def spec_from_jobs(
    *,
    name: str,
    jobs: Sequence[NewJob],
    priority: int = 500,
    labels: Mapping[str, LabelSettings] | None = None,
    cluster: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The explicit form of a DAG: every job spelled out, so parsing it gives the same nodes."""
    spec: dict[str, Any] = {"name": name, "priority": priority}
    label_section: dict[str, Any] = {}
    for label, settings in (labels or {}).items():
        entry: dict[str, Any] = {
            "resources": {
                "memory_mb": settings.memory_mb,
                "cores": settings.cores,
                "walltime_s": settings.walltime_s,
                "disk_mb": settings.disk_mb,
            }
        }
        if settings.max_attempts is not None:
            entry["max_attempts"] = settings.max_attempts
        if settings.retry_policy:
            entry["retry_policy"] = dict(settings.retry_policy)
        if settings.sites:
            entry["sites"] = {
                "include": list(settings.sites.include),
                "exclude": list(settings.sites.exclude),
            }
        if entry:
            label_section[label] = entry
    if label_section:
        spec["labels"] = label_section
    if cluster:
        spec["cluster"] = dict(cluster)
    spec["jobs"] = [
        {
            "name": job.name,
            "label": job.label,
            "command": job.command,
            "depends_on": list(job.parents),
            "resources": {
                "memory_mb": job.memory_mb,
                "cores": job.cores,
                "walltime_s": job.walltime_s,
                "disk_mb": job.disk_mb,
            },
            **({"environment": dict(job.environment)} if job.environment else {}),
            **({"container_image": job.container_image} if job.container_image else {}),
            **({"data_id": dict(job.data_id)} if job.data_id else {}),
            **({"files": [dict(f) for f in job.files]} if job.files else {}),
            **({"priority": job.priority} if job.priority is not None else {}),
        }
        for job in jobs
    ]
    return spec
