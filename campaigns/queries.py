"""Reads of the campaign manager: data ids from the configured sources, runtime history, the dry
run, and the rows the pages and the API show."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, F, Q, QuerySet

from campaigns.models import (
    CAMPAIGN_FINAL,
    ActionLog,
    Campaign,
    CampaignStatus,
    Group,
    GroupAttempt,
    GroupStatus,
    Step,
)
from campaigns.spec import config_resolve, jobs_plan
from campaigns.splitting import (
    DataId,
    SplitError,
    data_ids_from_ranges,
    data_ids_from_text,
    data_ids_normalise,
    split,
)
from dispatcher.models import JobAttempt, Task
from dispatcher.queries import task_state_counts
from dispatcher.states import JobStatus


def data_ids_load(data: Mapping[str, Any]) -> list[DataId]:
    """The campaign's data ids, sorted and unique; raises SplitError naming the problem, or the
    size against `CAMPAIGNS["MAX_DATA_IDS"]` (ranges are counted before they are made, a catalog
    query reads at most one row over the cap)."""
    source, body = next(iter(data.items()))
    limit = int(settings.CAMPAIGNS["MAX_DATA_IDS"])
    ids: list[Any]
    if source == "ids":
        if not isinstance(body, list):
            raise SplitError("data.ids must be a list")
        ids = body
    elif source == "ranges":
        ids = data_ids_from_ranges(body, limit=limit)
    elif source == "file":
        ids = _data_file_read(body)
    elif source == "query":
        ids = _catalog_query(body, limit=limit)
    else:
        raise SplitError(f"unknown data source {source!r}")
    if len(ids) > limit:
        raise SplitError(
            f"data.{source} holds {'more than ' if source == 'query' else ''}{limit if source == 'query' else len(ids)} "
            f"data ids; the limit is {limit} (AILURO_CAMPAIGN_MAX_DATA_IDS)"
        )
    return data_ids_normalise(ids)


def _data_file_read(body: Mapping[str, Any]) -> list[DataId]:
    root = Path(str(settings.CAMPAIGNS["DATA_DIR"]))
    path = (root / str(body["path"])).resolve()
    if not path.is_relative_to(root):
        raise SplitError(f"data.file.path must stay inside the campaign data folder {root}")
    if not path.is_file():
        raise SplitError(f"data file {body['path']!r} not found under {root}")
    return data_ids_from_text(
        path.read_text(encoding="utf-8"), fmt=str(body.get("format", "csv")), column=body.get("column")
    )


def _catalog_query(body: Mapping[str, Any], *, limit: int) -> list[DataId]:
    """SELECT DISTINCT over a configured catalog table.

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
    sql = f"SELECT DISTINCT {q(catalog['column'])} FROM {q(catalog['table'])}{where} LIMIT %s"  # noqa: S608  (names from settings, quoted; values are parameters)
    params.append(limit + 1)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


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


@dataclass
class StepPlan:
    name: str
    groups: int
    jobs: int
    largest_group_jobs: int
    core_hours: float
    group_names: list[str] = field(default_factory=list)


@dataclass
class DryRun:
    data_ids: int
    steps: list[StepPlan]
    core_hours: float
    estimated_from: dict[str, str]  # label → "history (n attempts)" or "request"
    errors: list[str]
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def campaign_dry_run(spec: Mapping[str, Any], *, campaign_id: int | None = None) -> DryRun:
    """What a launch would create, without writing anything.

    1. Load and split the data per step (split errors are reported, not raised).
    2. Jobs per group from the resolved config; the largest DAG against MAX_DAG_JOBS.
    3. Core-hours: per label, mean walltime of finished attempts × cores, else the requested walltime.
    4. Collisions: other live campaigns running one of the same labels over some of the same ids.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        ids = data_ids_load(spec["data"])
    except SplitError as exc:
        return DryRun(0, [], 0.0, {}, [f"data: {exc}"], [])
    history = label_runtimes(spec["pipeline"])
    estimated_from = {
        label: (f"history ({int(history[label]['n'])} attempts)" if label in history else "request")
        for label in spec["pipeline"]
    }
    limit = int(settings.AILURO["MAX_DAG_JOBS"])
    steps: list[StepPlan] = []
    for step in spec["steps"]:
        try:
            plans = split(ids, step["split"])
        except SplitError as exc:
            errors.append(f"step {step['name']}: {exc}")
            continue
        config = config_resolve(spec, step=step["name"])
        jobs = core_h = 0.0
        largest = 0
        for plan in plans:
            per_label = _jobs_per_label(config, len(plan.data_ids))
            n = sum(per_label.values())
            largest = max(largest, n)
            jobs += n
            for label, count in per_label.items():
                entry = config["labels"][label]
                seconds = history[label]["mean_s"] if label in history else entry["walltime_s"]
                core_h += count * seconds * entry["cores"] / 3600
        if largest > limit:
            errors.append(f"step {step['name']}: a group has {largest} jobs, above MAX_DAG_JOBS {limit}")
        steps.append(
            StepPlan(
                step["name"], len(plans), int(jobs), largest, round(core_h, 3), [p.name for p in plans[:50]]
            )
        )
    warnings.extend(_collisions(spec, set(ids), campaign_id))
    return DryRun(
        len(ids), steps, round(sum(s.core_hours for s in steps), 3), estimated_from, errors, warnings
    )


def _jobs_per_label(config: Mapping[str, Any], n_ids: int) -> dict[str, int]:
    return {label: (n_ids if e["per"] == "data_id" else 1) for label, e in config["labels"].items()}


def _collisions(spec: Mapping[str, Any], ids: set[DataId], campaign_id: int | None) -> list[str]:
    labels = {label for step in spec["steps"] for label in step["labels"]}
    out: list[str] = []
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
        for data_ids in Group.objects.filter(campaign=other).values_list("data_ids", flat=True):
            overlap += sum(1 for d in data_ids if d in ids)
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
    never done. Three queries for any number of groups."""
    groups = [g for g in groups if g.attempt]
    if not groups:
        return
    workflow_of = dict(
        GroupAttempt.objects.filter(group__in=groups, attempt=F("group__attempt")).values_list(
            "group_id", "workflow_id"
        )
    )
    tasks = list(
        Task.objects.filter(workflow_id__in=set(workflow_of.values())).values_list(
            "jeditaskid", "workflow_id"
        )
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
    attempts over their jobs, rounded down (`groups_jobs_done_live` counts them)."""
    groups = list(groups)
    total = sum(g.jobs_total for g in groups)
    done = sum(g.jobs_done for g in groups)
    etas = [g.eta for g in groups if g.eta is not None]
    return {
        "jobs_total": total,
        "jobs_done": done,
        "percent": math.floor(100 * done / total) if total else 0,
        "eta": max(etas) if etas else None,
    }


def group_jobs_plan(group: Group, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The group's full job list under the campaign's current spec (for previews)."""
    config = config_resolve(spec, step=group.step.name)
    return jobs_plan(config, group=group.name, data_ids=group.data_ids, attempt=max(group.attempt, 1))
