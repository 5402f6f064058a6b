"""Reads of the campaign manager: data ids from the configured sources, runtime history and the
rows the pages and the API show. The dry run, which plans a spec from these, is `campaigns.dry_run`."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, F, Max, Q, QuerySet, Sum

from campaigns.dataids import (
    data_rows_from_text,
    product_ids,
    product_size,
    tuples_normalise,
)
from campaigns.models import (
    ActionLog,
    Campaign,
    CampaignVersion,
    Group,
    GroupAttempt,
    GroupStatus,
    Step,
)
from campaigns.spec import cluster_task_labels, config_resolve, jobs_plan
from campaigns.splitting import (
    SplitError,
    data_ids_from_ranges,
    data_ids_from_text,
    data_ids_normalise,
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
        ids = catalog_query(body, limit=limit, dims=dims)
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


def catalog_query(body: Mapping[str, Any], *, limit: int, dims: Sequence[str] | None = None) -> list[Any]:
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
