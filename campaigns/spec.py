"""Campaign specs: YAML → validated plain data, per-attempt resolved configs, and the job list of a
group. Pure (docs/contributing.md#shape-of-the-code): no ORM here; `campaigns.services` stores what these functions return.

A spec::

    name: dr1-test
    dimension: visit                 # the data-id key the jobs get: {visit: 1234}
    priority: 500
    pipeline:                        # labels, as the workflow compact spec
      isr: {command: "run isr {data_id}", memory_mb: 2000, sites: {exclude: [BNL_TEST]}}
      calibrate: {command: "run calibrate {data_id}", parents: [isr], memory_mb: 4000}
      coadd: {command: "run coadd {group}", parents: [calibrate], per: group}
    data:                            # one of ids / ranges / file / query
      ranges: [[1, 200]]
    steps:
      - name: step1
        labels: [isr, calibrate]
        split: {rule: query, max_group_size: 50, min_groups: 2}
        max_running_groups: 2
        overrides: {memory_mb: 3000, labels: {calibrate: {memory_mb: 5000}}}
      - name: step2
        labels: [coadd]
        breakpoint: true
    notifications: {webhook: "http://127.0.0.1:9000/hook", events: [failure, stall, completion]}
    stall_after_s: 3600

`sites` ({include, exclude}: queue or site names, `*` wildcards, as in workflow specs) may stand on a
pipeline label, in a step's overrides (all its labels, or per label) and in a rescue's overrides;
each key layers on its own. Commands may use `{data_id}`, `{group}`, `{step}`, `{campaign}`, `{attempt}` and `{label}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from django.conf import settings

from campaigns.spec_checks import FieldInvalid, spec_data_check, spec_raw_check
from campaigns.splitting import SplitError, ranges_size, split_check, split_size
from dispatcher.workflows import WorkflowInvalid
from dispatcher.workflows.label_policies import failure_budget_parse, learn_requests_parse
from dispatcher.workflows.spec_check import site_rule_parse

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
LABEL_KEYS = {
    "command",
    "parents",
    "memory_mb",
    "cores",
    "walltime_s",
    "disk_mb",
    "priority",
    "per",
    "sites",
    "failure_budget",
    "learn_requests",
}
RESOURCE_KEYS = {"memory_mb", "cores", "walltime_s", "disk_mb", "priority"}
NOTIFY_EVENTS = ("failure", "stall", "completion", "budget")
_PLACEHOLDER = re.compile(r"\{(data_id|group|step|campaign|attempt|label)\}")
MAX_SPEC_BYTES = 1024 * 1024
# A pipeline command template, as workflow templates are bounded per job.
MAX_COMMAND_CHARS = 64 * 1024


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


def _require(cond: bool, message: str) -> None:
    if not cond:
        match = _FIELD_AT_START.match(message)
        raise SpecInvalid(message, field=match.group(0) if match else "")


def _int_field(value: Any, where: str, *, minimum: int = 0) -> int:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{where} must be an integer ≥ {minimum}, got {value!r}",
    )
    return int(value)


def _resources(raw: Any, where: str, *, sites: bool = False) -> dict[str, Any]:
    """Resource overrides (and, where `sites`, a `sites` rule) of one layer; `labels` is the
    caller's."""
    _require(isinstance(raw, Mapping), f"{where} must be a mapping")
    unknown = set(raw) - RESOURCE_KEYS - {"labels"} - ({"sites"} if sites else set())
    _require(not unknown, f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {
        k: _int_field(v, f"{where}.{k}", minimum=0 if k == "priority" else 1)
        for k, v in raw.items()
        if k not in ("labels", "sites")
    }
    if raw.get("sites") is not None:
        out["sites"] = sites_parse(raw["sites"], f"{where}.sites")
    return out


def sites_parse(raw: Any, where: str) -> dict[str, list[str]]:
    """A `sites` rule as the workflow spec takes it (JSON-able: lists, only the keys given)."""
    try:
        return {key: list(patterns) for key, patterns in site_rule_parse(raw, where).items()}
    except WorkflowInvalid as exc:
        raise SpecInvalid(exc.message, field=exc.field or where) from None


def _layer(entry: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Apply one override layer to a label's entry: values replace, `sites` keys one by one."""
    for key, value in layer.items():
        if key == "sites":
            entry["sites"] = {**entry.get("sites", {}), **value}
        else:
            entry[key] = value


def spec_parse(text: str) -> dict[str, Any]:
    """Parse and validate a YAML spec; returns the normalised spec (plain JSON-able data)."""
    _require(len(text.encode()) <= MAX_SPEC_BYTES, f"spec is larger than {MAX_SPEC_BYTES} bytes")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecInvalid(f"spec is not valid YAML: {exc}") from exc
    _require(isinstance(raw, Mapping), "spec must be a YAML mapping")
    return spec_validate(raw)


def spec_validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised spec; every key checked (`campaigns.spec_checks` looks into the rules)."""
    _deep_check(spec_raw_check, raw)
    spec = _spec_normalise(raw)
    _deep_check(spec_data_check, spec)
    return spec


def _deep_check(check: Any, value: Mapping[str, Any]) -> None:
    try:
        check(value)
    except FieldInvalid as exc:
        raise SpecInvalid(str(exc), field=exc.field) from None


def _spec_normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    known = {
        "name",
        "description",
        "dimension",
        "priority",
        "pipeline",
        "data",
        "steps",
        "notifications",
        "stall_after_s",
        "failure_budget",
        "learn_requests",
    }
    unknown = set(raw) - known
    _require(not unknown, f"spec has unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    _require(
        isinstance(name, str) and bool(NAME_RE.match(name)),
        f"name must match {NAME_RE.pattern}, got {name!r}",
    )
    dimension = raw.get("dimension", "data_id")
    _require(isinstance(dimension, str) and bool(NAME_RE.match(dimension)), "dimension must be a plain name")
    priority = _int_field(raw.get("priority", 500), "priority")

    pipeline_raw: Any = raw.get("pipeline")
    _require(isinstance(pipeline_raw, Mapping) and bool(pipeline_raw), "pipeline must map labels to commands")
    pipeline: dict[str, dict[str, Any]] = {}
    for label, body in pipeline_raw.items():
        where = f"pipeline.{label}"
        _require(isinstance(label, str) and bool(NAME_RE.match(label)), f"{where}: bad label name")
        _require(isinstance(body, Mapping), f"{where} must be a mapping with a command")
        unknown = set(body) - LABEL_KEYS
        _require(not unknown, f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        command = body.get("command")
        _require(isinstance(command, str) and bool(command.strip()), f"{where}.command is required")
        if len(command) > MAX_COMMAND_CHARS:
            raise SpecInvalid(
                f"{where}.command is {len(command)} characters; at most {MAX_COMMAND_CHARS} "
                "(it is copied into every job of the label)",
                field=f"{where}.command",
            )
        parents = body.get("parents", [])
        _require(
            isinstance(parents, list) and all(isinstance(p, str) for p in parents),
            f"{where}.parents must be a list",
        )
        per = body.get("per", "data_id")
        _require(per in ("data_id", "group"), f"{where}.per must be data_id or group")
        entry: dict[str, Any] = {"command": command, "parents": list(parents), "per": per}
        entry["memory_mb"] = _int_field(body.get("memory_mb", 2000), f"{where}.memory_mb", minimum=1)
        entry["cores"] = _int_field(body.get("cores", 1), f"{where}.cores", minimum=1)
        entry["walltime_s"] = _int_field(body.get("walltime_s", 3600), f"{where}.walltime_s", minimum=1)
        entry["disk_mb"] = _int_field(body.get("disk_mb", 1000), f"{where}.disk_mb", minimum=1)
        if "priority" in body:
            entry["priority"] = _int_field(body["priority"], f"{where}.priority")
        if body.get("sites") is not None:
            entry["sites"] = sites_parse(body["sites"], f"{where}.sites")
        # Per label, else the campaign's own for every label (docs/user-guide/campaigns.md).
        for key, parse in (
            ("failure_budget", failure_budget_parse),
            ("learn_requests", learn_requests_parse),
        ):
            raw_value = body[key] if key in body else raw.get(key)
            try:
                value = parse(raw_value, f"{where}.{key}" if key in body else key)
            except WorkflowInvalid as exc:
                raise SpecInvalid(exc.message, field=exc.field or "") from None
            if value is not None:
                entry[key] = value
        pipeline[label] = entry
    for label, entry in pipeline.items():
        for parent in entry["parents"]:
            _require(parent in pipeline, f"pipeline.{label}.parents names unknown label {parent!r}")
    _label_order(pipeline)  # refuses cycles

    data: Any = raw.get("data")
    _require(
        isinstance(data, Mapping) and len(data) == 1, "data must have exactly one of ids, ranges, file, query"
    )
    source = next(iter(data))
    _require(source in ("ids", "ranges", "file", "query"), f"data.{source}: unknown source")
    n_ids = _data_size(source, data[source])
    if source == "file":
        body = data["file"]
        _require(isinstance(body, Mapping) and isinstance(body.get("path"), str), "data.file needs a path")
        _require(body.get("format", "csv") in ("csv", "json"), "data.file.format must be csv or json")
    if source == "query":
        body = data["query"]
        _require(
            isinstance(body, Mapping) and isinstance(body.get("catalog"), str), "data.query needs a catalog"
        )
        _require(isinstance(body.get("where", {}), Mapping), "data.query.where must be a mapping")

    steps_raw: Any = raw.get("steps")
    _require(isinstance(steps_raw, list) and bool(steps_raw), "steps must be a non-empty list")
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, body in enumerate(steps_raw):
        where = f"steps[{i}]"
        _require(isinstance(body, Mapping), f"{where} must be a mapping")
        unknown = set(body) - {"name", "labels", "split", "max_running_groups", "breakpoint", "overrides"}
        _require(not unknown, f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        step_name = body.get("name")
        _require(isinstance(step_name, str) and bool(NAME_RE.match(step_name)), f"{where}.name is required")
        _require(step_name not in seen, f"{where}: step name {step_name!r} is used twice")
        seen.add(step_name)
        labels = body.get("labels")
        _require(isinstance(labels, list) and bool(labels), f"{where}.labels must be a non-empty list")
        for label in labels:
            _require(label in pipeline, f"{where}.labels names unknown label {label!r}")
        split = body.get("split", {"rule": "none"})
        _require(isinstance(split, Mapping), f"{where}.split must be a mapping")
        try:
            split_check(split)
        except SplitError as exc:
            field = f"{where}.split" + (f".{exc.field}" if exc.field else "")
            raise SpecInvalid(f"{where}.split: {exc}", field=field) from exc
        _groups_check(split, n_ids, f"{where}.split")
        overrides = body.get("overrides", {})
        resources = _resources(overrides, f"{where}.overrides", sites=True)
        label_overrides: dict[str, dict[str, Any]] = {}
        for label, body_l in (overrides.get("labels") or {}).items():
            _require(label in labels, f"{where}.overrides.labels: {label!r} is not a label of this step")
            label_overrides[label] = _resources(body_l, f"{where}.overrides.labels.{label}", sites=True)
        steps.append(
            {
                "name": step_name,
                "labels": list(labels),
                "split": dict(split),
                "max_running_groups": _int_field(
                    body.get("max_running_groups", 0), f"{where}.max_running_groups"
                ),
                "breakpoint": bool(body.get("breakpoint", False)),
                "overrides": resources,
                "label_overrides": label_overrides,
            }
        )

    notifications: Any = raw.get("notifications", {})
    _require(isinstance(notifications, Mapping), "notifications must be a mapping")
    webhook = notifications.get("webhook", "")
    _require(
        webhook == "" or (isinstance(webhook, str) and webhook.startswith(("http://", "https://"))),
        "notifications.webhook must be an http(s) URL",
    )
    events = notifications.get("events", list(NOTIFY_EVENTS))
    _require(
        isinstance(events, list) and all(e in NOTIFY_EVENTS for e in events),
        f"notifications.events must be a list drawn from {', '.join(NOTIFY_EVENTS)}",
    )
    return {
        "name": name,
        "description": str(raw.get("description", "")),
        "dimension": dimension,
        "priority": priority,
        "pipeline": pipeline,
        "data": {source: data[source]},
        "steps": steps,
        "notifications": {"webhook": webhook, "events": events},
        "stall_after_s": _int_field(raw.get("stall_after_s", 3600), "stall_after_s", minimum=1),
    }


def _data_size(source: str, body: Any) -> int | None:
    """How many data ids `data` names, when the spec alone says (ids, ranges: counted, not made);
    over `CAMPAIGNS["MAX_DATA_IDS"]` is refused (413)."""
    limit = int(settings.CAMPAIGNS["MAX_DATA_IDS"])
    if source == "ids":
        _require(isinstance(body, list), "data.ids must be a list")
        n = len(body)
    elif source == "ranges":
        try:
            n = ranges_size(body)
        except SplitError as exc:
            raise SpecInvalid(f"data.ranges: {exc}", field="data.ranges") from None
    else:
        return None
    if n > limit:
        raise SpecTooLarge(
            f"data.{source} holds {n} data ids; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)",
            field=f"data.{source}",
        )
    return n


def _groups_check(split: Mapping[str, Any], n_ids: int | None, where: str) -> None:
    """A step's group count from its rule and the data size (arithmetic, nothing split) against
    `CAMPAIGNS["MAX_GROUPS"]` (413 naming the rule's field)."""
    limit = int(settings.CAMPAIGNS["MAX_GROUPS"])
    groups = split_size(split, n_ids)
    if groups > limit:
        kind = split.get("rule", "none")
        if kind == "query":
            # min_groups when it alone sets the count, else the group size that cuts too fine.
            kind = "min_groups" if groups == split.get("min_groups") else "max_group_size"
        raise SpecTooLarge(
            f"{where} makes {groups} groups; the limit is {limit} (AILURO_CAMPAIGN_MAX_GROUPS)",
            field=f"{where}.{kind}",
        )


def _label_order(pipeline: Mapping[str, Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(label: str, path: list[str]) -> None:
        if state.get(label) == 2:
            return
        if state.get(label) == 1:
            raise SpecInvalid("pipeline has a cycle: " + " -> ".join([*path, label]))
        state[label] = 1
        for parent in pipeline[label]["parents"]:
            visit(parent, [*path, label])
        state[label] = 2
        order.append(label)

    for label in pipeline:
        visit(label, [])
    return order


def config_resolve(
    spec: Mapping[str, Any], *, step: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The config one attempt of a group of `step` runs with.

    Layers, last wins: pipeline label defaults → step overrides → step label overrides → the
    attempt's overrides (`sites:` for every label, `labels:` per label; `jobs:` per job name, e.g.
    memory for one error class). `sites` layer key by key (include, exclude).
    Labels of other steps are dropped, and so are parents outside the step (an earlier step ran them).
    """
    body = next((s for s in spec["steps"] if s["name"] == step), None)
    if body is None:
        raise SpecInvalid(f"no step {step!r} in the spec")
    overrides = dict(overrides or {})
    labels: dict[str, dict[str, Any]] = {}
    for label in _label_order(spec["pipeline"]):
        if label not in body["labels"]:
            continue
        entry = dict(spec["pipeline"][label])
        entry["parents"] = [p for p in entry["parents"] if p in body["labels"]]
        entry.setdefault("priority", spec["priority"])
        _layer(entry, body["overrides"])
        _layer(entry, body["label_overrides"].get(label, {}))
        if overrides.get("sites") is not None:
            _layer(entry, {"sites": sites_parse(overrides["sites"], "overrides.sites")})
        _layer(
            entry,
            _resources(overrides.get("labels", {}).get(label, {}), f"overrides.labels.{label}", sites=True),
        )
        labels[label] = entry
    jobs = {
        name: _resources(v, f"overrides.jobs.{name}") for name, v in (overrides.get("jobs") or {}).items()
    }
    config: dict[str, Any] = {
        "campaign": spec["name"],
        "step": step,
        "dimension": spec["dimension"],
        "priority": spec["priority"],
        "labels": labels,
        "jobs": jobs,
    }
    if overrides.get("only") is not None:
        config["only"] = sorted(overrides["only"])
    return config


def _id_part(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))


def job_name(label: str, data_id: Any | None) -> str:
    return label if data_id is None else f"{label}_{_id_part(data_id)}"


def jobs_plan(
    config: Mapping[str, Any], *, group: str, data_ids: Sequence[Any], attempt: int
) -> list[dict[str, Any]]:
    """The job list of one group attempt, as plain dicts shaped like `dispatcher.services.NewJob`.

    1. Per label in dependency order: one job per data id (`per: data_id`) or one for the group.
    2. Parents: the same data id's job of a per-data-id parent, every job of the parent label
       otherwise.
    3. With `only` (rescue, selective rerun), keep those jobs and drop parents outside the set: they
       succeeded in an earlier attempt.
    """
    jobs: list[dict[str, Any]] = []
    names_by_label: dict[str, list[str]] = {}
    for label, entry in config["labels"].items():
        ids: list[Any] = list(data_ids) if entry["per"] == "data_id" else [None]
        names_by_label[label] = []
        for data_id in ids:
            name = job_name(label, data_id)
            parents: list[str] = []
            for parent in entry["parents"]:
                if config["labels"][parent]["per"] == "data_id" and data_id is not None:
                    parents.append(job_name(parent, data_id))
                else:
                    parents.extend(names_by_label[parent])
            values = {
                "data_id": "" if data_id is None else str(data_id),
                "group": group,
                "step": config["step"],
                "campaign": config["campaign"],
                "attempt": str(attempt),
                "label": label,
            }
            command = _PLACEHOLDER.sub(lambda m, v=values: v[m.group(1)], entry["command"])  # type: ignore[misc]
            resources = {k: entry[k] for k in ("memory_mb", "cores", "walltime_s", "disk_mb", "priority")}
            resources.update(config["jobs"].get(name, {}))
            jobs.append(
                {
                    "name": name,
                    "label": label,
                    "command": command,
                    "parents": parents,
                    "data_id": {} if data_id is None else {config["dimension"]: data_id},
                    **resources,
                }
            )
            names_by_label[label].append(name)
    only = config.get("only")
    if only is not None:
        keep = set(only)
        jobs = [dict(j, parents=[p for p in j["parents"] if p in keep]) for j in jobs if j["name"] in keep]
    return jobs


def downstream_of(jobs: Sequence[Mapping[str, Any]], names: set[str]) -> set[str]:
    """Every job that depends, directly or not, on one of `names` (names excluded)."""
    children: dict[str, list[str]] = {}
    for job in jobs:
        for parent in job["parents"]:
            children.setdefault(parent, []).append(job["name"])
    out: set[str] = set()
    frontier = list(names)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in out and child not in names:
                out.add(child)
                frontier.append(child)
    return out


def config_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Leaf-level differences between two configs: [{path, old, new}], paths like `labels.isr.memory_mb`."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out.extend(config_diff(old.get(key), new.get(key), sub))
        return out
    return [] if old == new else [{"path": path, "old": old, "new": new}]
