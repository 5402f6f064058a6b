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

Data ids may have several dimensions (`dimensions: [visit, detector]`; `dimension: visit` is
`dimensions: [visit]`): a step may name its own `dimensions` and `data`, cut groups with
`group_by`, and `gather` from an earlier step; a label may run `per: [visit]`, and each dimension is
a command placeholder (`campaigns/spec_dims.py` checks them, `campaigns/dataids.py` plans them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from django.conf import settings

from campaigns.dataids import Key, as_key, from_key, positions
from campaigns.spec_checks import FieldInvalid, spec_data_check, spec_raw_check
from campaigns.spec_dims import NAME_RE as NAME_RE
from campaigns.spec_dims import STEP_KEYS, data_check, dims_parse, step_dims_check
from campaigns.spec_dims import SpecInvalid as SpecInvalid
from campaigns.spec_dims import SpecTooLarge as SpecTooLarge
from campaigns.spec_dims import require as _require
from campaigns.splitting import SplitError, split_check, split_size
from dispatcher.workflows import WorkflowInvalid, cluster_rules_parse
from dispatcher.workflows.clusters import cluster_label
from dispatcher.workflows.label_policies import failure_budget_parse, learn_requests_parse
from dispatcher.workflows.spec_check import site_rule_parse

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
_PLACEHOLDER_NAMES = ("data_id", "group", "step", "campaign", "attempt", "label")
MAX_SPEC_BYTES = 1024 * 1024
# A pipeline command template, as workflow templates are bounded per job.
MAX_COMMAND_CHARS = 64 * 1024


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
    _require(not unknown, f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}")
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
        "dimensions",
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
    _require(not unknown, f"spec has unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    name = raw.get("name")
    _require(
        isinstance(name, str) and bool(NAME_RE.match(name)),
        f"name must match {NAME_RE.pattern}, got {name!r}",
    )
    dims = dims_parse(raw, "")
    priority = _int_field(raw.get("priority", 500), "priority")

    pipeline_raw: Any = raw.get("pipeline")
    _require(isinstance(pipeline_raw, Mapping) and bool(pipeline_raw), "pipeline must map labels to commands")
    pipeline: dict[str, dict[str, Any]] = {}
    for label, body in pipeline_raw.items():
        where = f"pipeline.{label}"
        _require(isinstance(label, str) and bool(NAME_RE.match(label)), f"{where}: bad label name")
        _require(isinstance(body, Mapping), f"{where} must be a mapping with a command")
        unknown = set(body) - LABEL_KEYS
        _require(not unknown, f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}")
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
        _require(
            per in ("data_id", "group")
            or (isinstance(per, list) and bool(per) and all(isinstance(d, str) for d in per)),
            f"{where}.per must be data_id, group or a list of dimensions",
        )
        if isinstance(per, list):
            per = list(per)
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
    n_ids = data_check(data, dims, "data")

    steps_raw: Any = raw.get("steps")
    _require(isinstance(steps_raw, list) and bool(steps_raw), "steps must be a non-empty list")
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, body in enumerate(steps_raw):
        where = f"steps[{i}]"
        _require(isinstance(body, Mapping), f"{where} must be a mapping")
        unknown = set(body) - STEP_KEYS
        _require(not unknown, f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        step_name = body.get("name")
        _require(isinstance(step_name, str) and bool(NAME_RE.match(step_name)), f"{where}.name is required")
        _require(step_name not in seen, f"{where}: step name {step_name!r} is used twice")
        seen.add(step_name)
        labels = body.get("labels")
        _require(isinstance(labels, list) and bool(labels), f"{where}.labels must be a non-empty list")
        for label in labels:
            _require(
                isinstance(label, str) and label in pipeline, f"{where}.labels names unknown label {label!r}"
            )
        shape = step_dims_check(body, where, dims, n_ids, data, pipeline, steps)
        split = body.get("split", {"rule": "none"})
        _require(isinstance(split, Mapping), f"{where}.split must be a mapping")
        try:
            split_check(split)
        except SplitError as exc:
            field = f"{where}.split" + (f".{exc.field}" if exc.field else "")
            raise SpecInvalid(f"{where}.split: {exc}", field=field) from exc
        if shape["group_by"] is not None or len(shape["dimensions"]) > 1:
            rule = split.get("rule", "none")
            allowed = ("none",) if shape["group_by"] is not None else ("none", "query")
            if rule not in allowed:
                raise SpecInvalid(
                    f"{where}.split: rule {rule} "
                    + (
                        "does not go with group_by (group_by cuts the groups)"
                        if shape["group_by"] is not None
                        else "splits one-dimension data; with several dimensions use group_by or query"
                    ),
                    field=f"{where}.split",
                )
        if shape["group_by"] is not None:
            _groups_count_check(shape["n_groups"], f"{where}.group_by")
        else:
            _groups_check(split, shape["n_ids"], f"{where}.split")
        overrides = body.get("overrides", {})
        resources = _resources(overrides, f"{where}.overrides", sites=True)
        label_overrides: dict[str, dict[str, Any]] = {}
        for label, body_l in (overrides.get("labels") or {}).items():
            _require(label in labels, f"{where}.overrides.labels: {label!r} is not a label of this step")
            label_overrides[label] = _resources(body_l, f"{where}.overrides.labels.{label}", sites=True)
        cluster = _cluster_check(body.get("cluster"), labels, where)
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
                **{k: shape[k] for k in ("dimensions", "data", "group_by", "gather")},
                **({"cluster": cluster} if cluster else {}),
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
        "dimension": dims[0],
        "dimensions": dims,
        "priority": priority,
        "pipeline": pipeline,
        "data": dict(data),
        "steps": steps,
        "notifications": {"webhook": webhook, "events": events},
        "stall_after_s": _int_field(raw.get("stall_after_s", 3600), "stall_after_s", minimum=1),
    }


def _cluster_check(raw: Any, labels: Sequence[str], where: str) -> Any:
    """A step's `cluster`, as a workflow spec writes it (dispatcher/workflows/clusters.py), naming
    labels of the step only; the data-id key of a campaign job is the campaign's dimension."""
    if raw is None:
        return None
    try:
        rules = cluster_rules_parse(raw)
    except WorkflowInvalid as exc:
        raise SpecInvalid(f"{where}.{exc.message}", field=f"{where}.{exc.field}") from exc
    for rule in rules:
        for label in rule.labels:
            if label not in labels:
                field = f"{where}.{rule.field}" + ("" if not rule.connected else ".labels")
                raise SpecInvalid(f"{field}: {label!r} is not a label of this step", field=field)
    return raw


def cluster_task_labels(spec: Mapping[str, Any]) -> frozenset[str]:
    """The labels of the cluster jobs' tasks the steps' `cluster` rules make. A cluster job runs
    members that are jobs of their own (decision 0010): progress counts the members, not the
    cluster jobs, so a step's jobs done never exceed its planned jobs."""
    return frozenset(
        cluster_label(rule)
        for step in spec.get("steps", [])
        for rule in cluster_rules_parse(step.get("cluster"))
    )


def _groups_count_check(groups: int | None, field: str) -> None:
    limit = int(settings.CAMPAIGNS["MAX_GROUPS"])
    if groups is not None and groups > limit:
        raise SpecTooLarge(
            f"{field} makes {groups} groups; the limit is {limit} (AILURO_CAMPAIGN_MAX_GROUPS)", field=field
        )


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
        "dimension": body.get("dimensions", [spec["dimension"]])[0],
        "dimensions": list(body.get("dimensions", [spec["dimension"]])),
        "priority": spec["priority"],
        "labels": labels,
        "jobs": jobs,
    }
    if body.get("cluster"):
        config["cluster"] = body["cluster"]
    if overrides.get("only") is not None:
        config["only"] = sorted(overrides["only"])
    return config


def _id_part(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))


def job_name(label: str, data_id: Any | None) -> str:
    if data_id is None:
        return label
    if isinstance(data_id, tuple):
        return "_".join([label, *(_id_part(v) for v in data_id)])
    return f"{label}_{_id_part(data_id)}"


def _label_dims(per: Any, dims: list[str]) -> list[str]:
    return dims if per == "data_id" else [] if per == "group" else list(per)


def jobs_plan(
    config: Mapping[str, Any], *, group: str, data_ids: Sequence[Any], attempt: int
) -> list[dict[str, Any]]:
    """The job list of one group attempt, as plain dicts shaped like `dispatcher.services.NewJob`.

    1. Per label in dependency order: one job per data id (`per: data_id`), per distinct value of
       the dimensions it names (`per: [visit]`), or one for the group (`per: group`).
    2. Parents: the jobs of each parent label whose data ids agree with the job's on the
       dimensions both labels have (the same id; the detector jobs of a visit job: a gather; every
       job of a `per: group` label).
    3. With `only` (rescue, selective rerun), keep those jobs and drop parents outside the set: they
       succeeded in an earlier attempt.
    """
    dims = list(config.get("dimensions") or [config["dimension"]])
    n = len(dims)
    keys = [as_key(i, n) for i in data_ids]
    placeholder = re.compile(r"\{(" + "|".join(map(re.escape, [*_PLACEHOLDER_NAMES, *dims])) + r")\}")
    jobs: list[dict[str, Any]] = []
    # label → (its dimensions, {key on them: [job names]})
    made: dict[str, tuple[list[str], dict[Key, list[str]]]] = {}
    for label, entry in config["labels"].items():
        ldims = _label_dims(entry["per"], dims)
        idx = positions(dims, ldims)
        label_keys = keys if ldims == dims else sorted({tuple(k[p] for p in idx) for k in keys})
        by_key: dict[Key, list[str]] = {}
        wiring = []
        for parent in entry["parents"]:
            pdims, pmade = made[parent]
            shared = [d for d in ldims if d in pdims]
            mine, theirs = positions(ldims, shared), positions(pdims, shared)
            if theirs == list(range(len(pdims))) and mine == list(range(len(ldims))):
                wiring.append((mine, pmade))  # same dimensions: the same key
            else:
                regrouped: dict[Key, list[str]] = {}
                for pkey, names in pmade.items():
                    regrouped.setdefault(tuple(pkey[p] for p in theirs), []).extend(names)
                wiring.append((mine, regrouped))
        resources = {k: entry[k] for k in ("memory_mb", "cores", "walltime_s", "disk_mb", "priority")}
        for key in label_keys:
            data_id = from_key(key) if ldims else None
            name = job_name(label, data_id)
            parents: list[str] = []
            for mine, table in wiring:
                parents.extend(table.get(tuple(key[p] for p in mine), ()))
            id_map = dict(zip(ldims, key, strict=True))
            values = {
                "data_id": _data_id_text(id_map, n),
                "group": group,
                "step": config["step"],
                "campaign": config["campaign"],
                "attempt": str(attempt),
                "label": label,
                **{d: str(id_map.get(d, "")) for d in dims},
            }
            command = placeholder.sub(lambda m, v=values: v[m.group(1)], entry["command"])  # type: ignore[misc]
            job_resources = dict(resources)
            job_resources.update(config["jobs"].get(name, {}))
            jobs.append(
                {
                    "name": name,
                    "label": label,
                    "command": command,
                    "parents": parents,
                    "data_id": id_map,
                    **job_resources,
                }
            )
            by_key.setdefault(key, []).append(name)
        made[label] = (ldims, by_key)
    only = config.get("only")
    if only is not None:
        keep = set(only)
        jobs = [dict(j, parents=[p for p in j["parents"] if p in keep]) for j in jobs if j["name"] in keep]
    return jobs


def _data_id_text(id_map: Mapping[str, Any], n: int) -> str:
    """`{data_id}`: the value with one dimension (as before), `visit=3,detector=5` with several."""
    if not id_map:
        return ""
    if n == 1 or len(id_map) == 1:
        return str(next(iter(id_map.values())))
    return ",".join(f"{d}={v}" for d, v in id_map.items())


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
