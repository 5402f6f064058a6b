"""Reads of the campaign manager: data ids from the configured sources, runtime history, the dry
run, and the rows the pages and the API show."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, F, Max, Q, QuerySet, Sum

from campaigns.dataids import (
    data_rows_from_text,
    gather_groups,
    key_text,
    link_rows,
    product_ids,
    product_size,
    project,
    split_group_by,
    tuples_normalise,
)
from campaigns.models import (
    CAMPAIGN_FINAL,
    ActionLog,
    Campaign,
    CampaignStatus,
    CampaignVersion,
    Group,
    GroupAttempt,
    GroupStatus,
    Step,
)
from campaigns.spec import cluster_task_labels, config_resolve, jobs_plan
from campaigns.splitting import (
    GroupPlan,
    SplitError,
    data_ids_from_ranges,
    data_ids_from_text,
    data_ids_normalise,
    group_name,
    split,
)
from dispatcher.models import Job, JobAttempt, Task
from dispatcher.queries import task_state_counts
from dispatcher.services.learning import percentile
from dispatcher.states import JOB_ACTIVE, JobStatus


def data_ids_load(data: Mapping[str, Any], dims: Sequence[str] | None = None) -> list[Any]:
    """The data ids of `dims` (one dimension: scalars; several: tuples), sorted and unique; raises
    SplitError naming the problem, or the size against `CAMPAIGNS["MAX_DATA_IDS"]` (ranges and
    products are counted before they are made, a catalog query reads at most one row over the cap)."""
    dims = list(dims or ["data_id"])
    source, body = next(iter(data.items()))
    limit = int(settings.CAMPAIGNS["MAX_DATA_IDS"])
    ids: list[Any]
    if source == "ids":
        if not isinstance(body, list):
            raise SplitError("data.ids must be a list")
        ids = body
    elif source == "ranges":
        ids = data_ids_from_ranges(body, limit=limit)
    elif source == "product":
        size = product_size(body, dims, "data.product")
        if size > limit:
            raise SplitError(
                f"data.product holds {size} data ids; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)"
            )
        return product_ids(body, dims)
    elif source == "file":
        ids = _data_file_read(body, dims)
    elif source == "query":
        ids = _catalog_query(body, limit=limit, dims=dims)
    else:
        raise SplitError(f"unknown data source {source!r}")
    if len(ids) > limit:
        raise SplitError(
            f"data.{source} holds {'more than ' if source == 'query' else ''}{limit if source == 'query' else len(ids)} "
            f"data ids; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)"
        )
    if len(dims) > 1:
        return tuples_normalise(ids, dims)
    return data_ids_normalise(ids)


def _data_file_read(body: Mapping[str, Any], dims: Sequence[str]) -> list[Any]:
    root = Path(str(settings.CAMPAIGNS["DATA_DIR"]))
    path = (root / str(body["path"])).resolve()
    if not path.is_relative_to(root):
        raise SplitError(f"data.file.path must stay inside the campaign data folder {root}")
    if not path.is_file():
        raise SplitError(f"data file {body['path']!r} not found under {root}")
    text, fmt = path.read_text(encoding="utf-8"), str(body.get("format", "csv"))
    if len(dims) > 1:
        return data_rows_from_text(text, fmt=fmt, dims=dims)
    return data_ids_from_text(text, fmt=fmt, column=body.get("column"))


def _catalog_query(body: Mapping[str, Any], *, limit: int, dims: Sequence[str] | None = None) -> list[Any]:
    """SELECT DISTINCT over a configured catalog table: its `column` (scalars), or its `columns`
    (tuples in that order; every one of `dims` must be among them, and a row gives the `dims` values).

    Raw SQL because the table is not a Django model (it belongs to the site's data catalog); the
    table and column names come from settings (never from the spec) and are quoted, every value is
    a parameter. `where: {column: value | [values] | {min, max}}` on the configured filter columns.
    """
    catalogs: Any = settings.CAMPAIGNS["CATALOGS"]
    name = str(body["catalog"])
    if name not in catalogs:
        raise SplitError(f"no catalog {name!r} is configured (AILURO_CAMPAIGN_CATALOGS)")
    catalog = catalogs[name]
    q = connection.ops.quote_name
    allowed = set(catalog.get("filters", []))
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (body.get("where") or {}).items():
        if column not in allowed:
            raise SplitError(f"catalog {name!r} cannot be filtered on {column!r}; allowed: {sorted(allowed)}")
        if isinstance(value, Mapping):
            if "min" in value:
                clauses.append(f"{q(column)} >= %s")
                params.append(value["min"])
            if "max" in value:
                clauses.append(f"{q(column)} <= %s")
                params.append(value["max"])
        elif isinstance(value, list):
            clauses.append(f"{q(column)} IN ({', '.join(['%s'] * len(value))})")
            params.extend(value)
        else:
            clauses.append(f"{q(column)} = %s")
            params.append(value)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    columns = _catalog_columns(name, catalog, dims)
    select = ", ".join(q(c) for c in columns)
    sql = f"SELECT DISTINCT {select} FROM {q(catalog['table'])}{where} LIMIT %s"  # noqa: S608  (names from settings, quoted; values are parameters)
    params.append(limit + 1)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if dims is None:
        return [dict(zip(columns, r, strict=True)) for r in rows]
    return [r[0] for r in rows] if len(columns) == 1 else [list(r) for r in rows]


def _catalog_columns(name: str, catalog: Mapping[str, Any], dims: Sequence[str] | None) -> list[str]:
    """The columns a query reads: the catalog's `column`, or of its `columns` those named `dims`
    (all of them when `dims` is None: gather link rows)."""
    if not catalog.get("columns"):
        return [str(catalog["column"])]
    columns = [str(c) for c in catalog["columns"]]
    if dims is None:
        return columns
    missing = [d for d in dims if d not in columns]
    if missing:
        raise SplitError(f"catalog {name!r} has no column {missing[0]!r} (columns: {', '.join(columns)})")
    return list(dims)


def label_runtimes(labels: Iterable[str]) -> dict[str, dict[str, float]]:
    """Mean walltime (s) and count of finished attempts per label: the history behind estimates."""
    rows = (
        JobAttempt.objects.filter(
            jobstatus=JobStatus.FINISHED, job__label__in=list(labels), walltime_s__isnull=False
        )
        .values("job__label")
        .annotate(mean=Avg("walltime_s"), n=Count("id"))
        .order_by()
    )
    return {r["job__label"]: {"mean_s": float(r["mean"]), "n": float(r["n"])} for r in rows}


RUNTIME_SAMPLES = 500  # the newest finished attempts of a label its runtime history holds
RUNTIME_MIN_SAMPLES = 5  # fewer: the label has no history, its requested walltime stands in
RUNTIME_EXPECTED_PERCENTILE = 95.0
RUNTIME_WINDOW = dt.timedelta(days=30)  # older attempts are not history (bounds the scan of endtime)


@dataclass(frozen=True)
class LabelRuntime:
    """A label's runtime history: its newest finished attempts' wall times."""

    n: int
    median_s: float
    expected_s: float  # the RUNTIME_EXPECTED_PERCENTILE-th percentile: how long a healthy job may run


def label_runtime_history(labels: Iterable[str], *, now: dt.datetime) -> dict[str, LabelRuntime]:
    """Per label with at least RUNTIME_MIN_SAMPLES measured finished attempts within
    RUNTIME_WINDOW: the median and a high percentile of the newest RUNTIME_SAMPLES wall times (the
    shape of the learned requests' query, dispatcher/services/learning.py). One query per label,
    read backwards along jobattempt_endtime_idx."""
    out: dict[str, LabelRuntime] = {}
    for label in sorted(set(labels)):
        walls = [
            float(w)
            for w in JobAttempt.objects.filter(
                job__label=label,
                jobstatus=JobStatus.FINISHED,
                walltime_s__isnull=False,
                endtime__gte=now - RUNTIME_WINDOW,
            )
            .order_by("-endtime")
            .values_list("walltime_s", flat=True)[:RUNTIME_SAMPLES]
            if w is not None
        ]
        if len(walls) >= RUNTIME_MIN_SAMPLES:
            out[label] = LabelRuntime(
                n=len(walls),
                median_s=percentile(walls, 50.0),
                expected_s=percentile(walls, RUNTIME_EXPECTED_PERCENTILE),
            )
    return out


@dataclass
class AttemptActivity:
    """The progress signals of one workflow's jobs."""

    changed_at: dt.datetime | None = None  # the newest state change of any of its jobs
    heartbeat_at: dt.datetime | None = None  # the newest heartbeat of a job at a pilot
    cpu_s: float = 0.0  # CPU seconds the jobs at pilots reported
    cpu_reported: bool = False  # some job at a pilot reported CPU time
    running: list[tuple[str, dt.datetime | None]] = field(default_factory=list)  # (label, start)


def attempts_activity(workflow_ids: Iterable[int]) -> dict[int, AttemptActivity]:
    """Per workflow: its jobs' newest state change, the newest heartbeat and the CPU seconds of
    its jobs at pilots (sent, starting, running, holding), and the label and start of each running
    job. Two queries over the workflows' jobs (job_unique_name_in_workflow leads with workflow)."""
    ids = list(workflow_ids)
    out = {wf: AttemptActivity() for wf in ids}
    if not ids:
        return out
    at_pilot = Q(jobstatus__in=list(JOB_ACTIVE))
    rows = (
        Job.objects.filter(workflow_id__in=ids)
        .order_by()
        .values("workflow_id")
        .annotate(
            changed=Max("statechangetime"),
            heartbeat=Max("heartbeat_at", filter=at_pilot),
            cpu=Sum("cpu_time_s", filter=at_pilot),
            cpu_n=Count("cpu_time_s", filter=at_pilot),
        )
    )
    for r in rows:
        a = out[r["workflow_id"]]
        a.changed_at, a.heartbeat_at = r["changed"], r["heartbeat"]
        a.cpu_s, a.cpu_reported = float(r["cpu"] or 0.0), bool(r["cpu_n"])
    running = Job.objects.filter(workflow_id__in=ids, jobstatus=JobStatus.RUNNING).values_list(
        "workflow_id", "label", "starttime"
    )
    for wf, label, start in running:
        out[wf].running.append((label, start))
    return out


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
            rows = gather.get("links") or _catalog_query(
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


def campaigns_for_list() -> QuerySet[Campaign]:
    """/campaigns/ and GET /api/v1/campaigns/: one query with group counts per state."""
    return Campaign.objects.select_related("owner").annotate(
        groups_total=Count("groups"),
        groups_accepted=Count("groups", filter=Q(groups__status="accepted")),
        groups_failed=Count("groups", filter=Q(groups__status="failed")),
        groups_running=Count("groups", filter=Q(groups__status="running")),
    )


def group_counts(groups: Iterable[Group]) -> dict[str, int]:
    """The list's group counts (`campaigns_for_list`) from groups a page has loaded anyway."""
    statuses = [g.status for g in groups]
    return {
        "total": len(statuses),
        **{
            str(s): statuses.count(s) for s in (GroupStatus.ACCEPTED, GroupStatus.RUNNING, GroupStatus.FAILED)
        },
    }


def campaign_steps_with_groups(campaign_id: int) -> list[Step]:
    """The campaign page's steps × groups grid: two queries."""
    return list(Step.objects.filter(campaign_id=campaign_id).order_by("position").prefetch_related("groups"))


def campaign_actions(campaign_id: int, *, limit: int = 200) -> list[ActionLog]:
    return list(campaign_actions_queryset(campaign_id)[:limit])


def campaign_actions_queryset(campaign_id: int) -> QuerySet[ActionLog]:
    """The audit log of a campaign, newest first (`actionlog_campaign_idx`), for keyset pages."""
    return ActionLog.objects.filter(campaign_id=campaign_id).order_by("-id")


def group_attempt_chain(group_id: int) -> list[GroupAttempt]:
    return list(GroupAttempt.objects.filter(group_id=group_id).order_by("attempt").select_related("workflow"))


def campaign_wasted(campaign_id: int) -> dict[str, Any]:
    """Wasted core-hours of a campaign: the core-seconds (whole seconds of walltime × requested
    cores) of the failed attempts of every workflow its groups ran, in total and per group. One
    GROUP BY over the failed attempts of the campaign's jobs."""
    from django.db.models import F, Sum
    from django.db.models.functions import Coalesce, Round

    core = Coalesce(Round(F("walltime_s")), 0.0) * F("request_cores")
    rows = (
        JobAttempt.objects.filter(
            jobstatus=JobStatus.FAILED, job__workflow__campaign_attempt__group__campaign_id=campaign_id
        )
        .order_by()
        .values(group_id=F("job__workflow__campaign_attempt__group_id"))
        .annotate(core_s=Sum(core))
    )
    by_group = {r["group_id"]: int(r["core_s"] or 0) for r in rows}
    return {"core_seconds": sum(by_group.values()), "by_group": by_group}


def groups_jobs_done_live(groups: Iterable[Group]) -> None:
    """Set `jobs_done` of loaded groups to the finished jobs of their current attempt as counted
    now (the task counters plus their unfolded deltas, `task_state_counts`), so the pages and the
    API are exact whether or not the advancer ran since the jobs ended; the stored value is the
    advancer's, which its stall detection compares with. Failed, cancelled and pruned jobs are
    never done; cluster jobs are not counted, their members are (`cluster_task_labels`). Four
    queries for any number of groups."""
    groups = [g for g in groups if g.attempt]
    if not groups:
        return
    versions = CampaignVersion.objects.filter(
        campaign_id__in={g.campaign_id for g in groups}, version=F("campaign__version")
    )
    skipped = frozenset().union(
        *(cluster_task_labels(spec) for spec in versions.values_list("spec", flat=True))
    )
    workflow_of = dict(
        GroupAttempt.objects.filter(group__in=groups, attempt=F("group__attempt")).values_list(
            "group_id", "workflow_id"
        )
    )
    tasks = list(
        Task.objects.filter(workflow_id__in=set(workflow_of.values()))
        .exclude(label__in=skipped)
        .values_list("jeditaskid", "workflow_id")
    )
    counts = task_state_counts([t for t, _ in tasks])
    finished: dict[int, int] = {}
    for task_id, workflow_id in tasks:
        finished[workflow_id] = finished.get(workflow_id, 0) + counts[task_id].get(JobStatus.FINISHED, 0)
    for g in groups:
        if g.pk in workflow_of:
            g.jobs_done = finished.get(workflow_of[g.pk], 0)


def progress_summary(groups: Iterable[Group]) -> dict[str, Any]:
    """Percent done and ETA over groups (a step's or a campaign's): finished jobs of their current
    attempts over their jobs, rounded down (`groups_jobs_done_live` counts them); the ETA is the
    latest group's, with its basis; the stalled groups by name."""
    groups = list(groups)
    total = sum(g.jobs_total for g in groups)
    done = sum(g.jobs_done for g in groups)
    with_eta = [g for g in groups if g.eta is not None]
    last = max(with_eta, key=lambda g: (g.eta, g.pk), default=None)
    return {
        "jobs_total": total,
        "jobs_done": done,
        "percent": math.floor(100 * done / total) if total else 0,
        "eta": last.eta if last else None,
        "eta_basis": f"group {last.name} ends last of {len(with_eta)} running: {last.eta_basis}"
        if last
        else "",
        "stalled": [g.name for g in groups if g.stalled],
    }


def group_jobs_plan(group: Group, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The group's full job list under the campaign's current spec (for previews)."""
    config = config_resolve(spec, step=group.step.name)
    return jobs_plan(config, group=group.name, data_ids=group.data_ids, attempt=max(group.attempt, 1))
