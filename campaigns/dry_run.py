"""The campaign dry run: a spec's steps cut into groups, jobs per label per group, gathers between
steps and the data ids another campaign already processes; `launch` reuses the plan it makes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings

from campaigns.dataids import (
    gather_groups,
    key_text,
    link_rows,
    project,
    split_group_by,
)
from campaigns.models import (
    CAMPAIGN_FINAL,
    Campaign,
    CampaignStatus,
    Group,
)
from campaigns.queries import catalog_query, data_ids_load, label_runtimes
from campaigns.spec import config_resolve
from campaigns.splitting import (
    GroupPlan,
    SplitError,
    group_name,
    split,
)


@dataclass
class StepGroups:
    """A step's data ids (on its dimensions), its groups and, with `gather`, each group's upstream
    groups in the step it gathers from (`edges`: the data-id pairs behind them)."""

    dims: list[str]
    ids: list[Any]
    plans: list[GroupPlan]
    upstream: dict[str, list[str]] = field(default_factory=dict)
    edges: int = 0


def spec_dims(spec: Mapping[str, Any], step: Mapping[str, Any] | None = None) -> list[str]:
    """The data-id dimensions of the campaign, or of one of its steps (specs stored before steps
    had dimensions have only `dimension`)."""
    dims = list(spec.get("dimensions") or [spec["dimension"]])
    return list(step.get("dimensions") or dims) if step is not None else dims


def step_groups(
    spec: Mapping[str, Any], step: Mapping[str, Any], ids: Sequence[Any], earlier: Mapping[str, StepGroups]
) -> StepGroups:
    """Plan one step: its ids (its own `data`, else the campaign's projected onto its dimensions),
    groups (`group_by`, else the split rule) and gathers. Raises SplitError naming the problem."""
    cdims, dims = spec_dims(spec), spec_dims(spec, step)
    own = step.get("data")
    step_ids = data_ids_load(own, dims) if own else project(ids, cdims, dims)
    if step.get("group_by"):
        plans = split_group_by(step_ids, dims, step["group_by"])
    else:
        plans = split(step_ids, step["split"])
        if len(dims) > 1 and step["split"].get("rule") == "query":
            # Names from the first and last ids' values: `3_0-3_8`.
            plans = [
                GroupPlan(group_name(key_text(p.data_ids[0]), key_text(p.data_ids[-1])), p.data_ids)
                for p in plans
            ]
    out = StepGroups(dims, step_ids, plans)
    gather = step.get("gather")
    if gather:
        up = earlier[gather["step"]]
        keys: list[str] = []
        links: list[Any] = []
        if gather.get("links") or gather.get("query"):
            rows = gather.get("links") or catalog_query(
                gather["query"], limit=int(settings.CAMPAIGNS["MAX_DATA_IDS"]), dims=None
            )
            keys, links = link_rows(rows, "gather links", limit=int(settings.CAMPAIGNS["MAX_DATA_IDS"]))
        out.upstream, out.edges = gather_groups(
            plans, dims, up.plans, up.dims, along=gather["along"], link_keys=keys, links=links
        )
    return out


@dataclass
class StepPlan:
    name: str
    groups: int
    jobs: int
    largest_group_jobs: int
    core_hours: float
    group_names: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    group_by: list[str] | None = None
    # label → {groups, jobs, jobs_per_group: "9" or "8-9", shape: "20 × 9"}
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    gather: dict[str, Any] | None = None


@dataclass
class DryRun:
    data_ids: int
    steps: list[StepPlan]
    core_hours: float
    estimated_from: dict[str, str]  # label → "history (n attempts)" or "request"
    errors: list[str]
    warnings: list[str]
    # Each step's ids, groups and gathers, for the launch to write (not part of the answer).
    planned: dict[str, StepGroups] = field(default_factory=dict, repr=False, compare=False)
    # Each step's jobs per group (step → group name → jobs), for the launch's `Group.jobs_total`.
    group_jobs: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_ids": self.data_ids,
            "steps": [asdict(s) for s in self.steps],
            "core_hours": self.core_hours,
            "estimated_from": self.estimated_from,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def campaign_dry_run(spec: Mapping[str, Any], *, campaign_id: int | None = None) -> DryRun:
    """What a launch would create, without writing anything.

    1. Load the data; per step, its ids, groups and gathers (`step_groups`; errors are reported,
       not raised).
    2. Jobs per label and group from the resolved config (groups × jobs per label); the largest DAG
       against MAX_DAG_JOBS.
    3. Core-hours: per label, mean walltime of finished attempts × cores, else the requested walltime.
    4. Collisions: other live campaigns running one of the same labels over some of the same ids.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        ids = data_ids_load(spec["data"], spec_dims(spec))
    except SplitError as exc:
        return DryRun(0, [], 0.0, {}, [f"data: {exc}"], [])
    history = label_runtimes(spec["pipeline"])
    estimated_from = {
        label: (f"history ({int(history[label]['n'])} attempts)" if label in history else "request")
        for label in spec["pipeline"]
    }
    limit = int(settings.AILURO["MAX_DAG_JOBS"])
    steps: list[StepPlan] = []
    planned: dict[str, StepGroups] = {}
    group_jobs: dict[str, dict[str, int]] = {}
    for step in spec["steps"]:
        try:
            sg = planned[step["name"]] = step_groups(spec, step, ids, planned)
        except SplitError as exc:
            errors.append(f"step {step['name']}: {exc}")
            continue
        config = config_resolve(spec, step=step["name"])
        jobs = core_h = 0.0
        largest = 0
        counts: dict[str, list[int]] = {label: [] for label in config["labels"]}
        jobs_of = group_jobs[step["name"]] = {}
        for plan in sg.plans:
            per_label = _jobs_per_label(config, sg.dims, plan.data_ids)
            n = jobs_of[plan.name] = sum(per_label.values())
            largest = max(largest, n)
            jobs += n
            for label, count in per_label.items():
                counts[label].append(count)
                entry = config["labels"][label]
                seconds = history[label]["mean_s"] if label in history else entry["walltime_s"]
                core_h += count * seconds * entry["cores"] / 3600
        if largest > limit:
            errors.append(f"step {step['name']}: a group has {largest} jobs, above MAX_DAG_JOBS {limit}")
        steps.append(
            StepPlan(
                step["name"],
                len(sg.plans),
                int(jobs),
                largest,
                round(core_h, 3),
                [p.name for p in sg.plans[:50]],
                sg.dims,
                step.get("group_by"),
                {label: _label_shape(c) for label, c in counts.items()},
                None
                if not step.get("gather")
                else {
                    "step": step["gather"]["step"],
                    "along": step["gather"]["along"],
                    "edges": sg.edges,
                    "group_edges": sum(len(v) for v in sg.upstream.values()),
                },
            )
        )
    warnings.extend(_collisions(spec, ids, campaign_id))
    return DryRun(
        len(ids),
        steps,
        round(sum(s.core_hours for s in steps), 3),
        estimated_from,
        errors,
        warnings,
        planned,
        group_jobs,
    )


def dry_run_text(dry: Mapping[str, Any]) -> str:
    """One line per step of a dry run's answer: dimensions, grouping, groups × jobs per label,
    gather (`step1 [visit × detector, by visit]: isr 20 × 9, calibrate 20 × 9`)."""
    lines = []
    for step in dry.get("steps") or []:
        dims = " × ".join(step.get("dimensions") or [])
        by = f", by {' × '.join(step['group_by'])}" if step.get("group_by") else ""
        labels = ", ".join(f"{label} {v['shape']}" for label, v in (step.get("labels") or {}).items())
        gather = step.get("gather")
        gathers = f"; gathers {gather['edges']} ids of {gather['step']}" if gather else ""
        lines.append(f"{step['name']} [{dims}{by}]: {labels}{gathers}")
    return "; ".join(lines)


def _label_shape(counts: list[int]) -> dict[str, Any]:
    low, high = (min(counts), max(counts)) if counts else (0, 0)
    per_group = str(low) if low == high else f"{low}-{high}"
    return {
        "groups": len(counts),
        "jobs": sum(counts),
        "jobs_per_group": per_group,
        "shape": f"{len(counts)} × {per_group}",
    }


def _jobs_per_label(
    config: Mapping[str, Any], dims: Sequence[str], data_ids: Sequence[Any]
) -> dict[str, int]:
    """Jobs per label in a group: its ids, the distinct values of a `per: [dims]` label's
    dimensions, or one."""
    out: dict[str, int] = {}
    for label, e in config["labels"].items():
        per = e["per"]
        if per == "data_id" or (isinstance(per, list) and list(per) == list(dims)):
            out[label] = len(data_ids)
        elif per == "group":
            out[label] = 1
        else:
            out[label] = len(project(data_ids, dims, per))
    return out


def _hashable(data_id: Any) -> Any:
    return tuple(data_id) if isinstance(data_id, list) else data_id


def _collisions(spec: Mapping[str, Any], ids_list: Sequence[Any], campaign_id: int | None) -> list[str]:
    labels = {label for step in spec["steps"] for label in step["labels"]}
    out: list[str] = []
    ids: set[Any] | None = None
    live = Campaign.objects.exclude(status__in=[*CAMPAIGN_FINAL, CampaignStatus.DRAFT])
    if campaign_id is not None:
        live = live.exclude(pk=campaign_id)
    for other in live.only("id", "name"):
        version = other.versions.filter(version=other.version).values_list("spec", flat=True).first()
        if not version:
            continue
        shared = labels & {label for step in version["steps"] for label in step["labels"]}
        if not shared:
            continue
        overlap = 0
        if ids is None:
            ids = {_hashable(i) for i in ids_list}  # built only when another campaign shares a label
        for data_ids in Group.objects.filter(campaign=other).values_list("data_ids", flat=True):
            overlap += sum(1 for d in data_ids if _hashable(d) in ids)
        if overlap:
            out.append(
                f"campaign {other.name} (id {other.pk}) already runs label(s) {', '.join(sorted(shared))} "
                f"over {overlap} of these data ids"
            )
    return out
