"""Named reads of `/dash/`, `/sites/` and `/site/<name>/`: jobs per region, site and queue by
state, per-queue statistics, worker-node outliers.

Active jobs are counted from their partial index whatever their age; final jobs of a window on
PostgreSQL from the per-hour summary plus the partial hours (`rollups.queue_state_rows`, decision
0003), elsewhere (SQLite, all time) with one ORM GROUP BY on the indexed (queue, jobstatus,
statechangetime). A site's per-queue statistics and nodes are one GROUP BY of its queues' ended
jobs, index-only on the partial covering `job_ended_stats_idx` (decision 0015).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Max, Q, Sum

from ailuro import units
from dispatcher.models import ArchivedJob, Job, Queue, Site
from dispatcher.queries import archive_reached
from dispatcher.states import JOB_FINAL, JOB_NON_FINAL, JobStatus
from harvester.models import Worker
from pandamon import rollups
from pandamon.sql import _fetch_aggregate


def dash_matrix(since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """Region → site → queue × job state (`_queue_state_rows`), with % failure and running slots.
    Four queries."""
    counts = _queue_state_rows(since, until)
    workers = (
        Worker.objects.filter(status__in=["submitted", "running"])
        .order_by()
        .values("queue_id", "status")
        .annotate(n=Count("id"))
    )
    queues = list(Queue.objects.select_related("site").order_by("site__region", "site__name", "name"))
    by_queue: dict[str, dict[str, int]] = defaultdict(dict)
    slots: dict[str, int] = defaultdict(int)
    for row in counts:
        by_queue[row["queue_id"]][row["jobstatus"]] = row["n"]
        if row["jobstatus"] == JobStatus.RUNNING:
            slots[row["queue_id"]] += row["cores"] or 0
    queue_pk_name = {qu.pk: qu.name for qu in queues}
    worker_counts: dict[str, dict[str, int]] = defaultdict(dict)
    for w_row in workers:
        worker_counts[queue_pk_name.get(w_row["queue_id"], "?")][w_row["status"]] = w_row["n"]

    def summarise(name: str, counts: dict[str, int], running_slots: int, w: dict[str, int]) -> dict[str, Any]:
        finished = counts.get(JobStatus.FINISHED, 0)
        failed = counts.get(JobStatus.FAILED, 0)
        return {
            "name": name,
            "counts": counts,
            "total": sum(counts.values()),
            "failure_pct": 100 * failed / (failed + finished) if failed + finished else None,
            "running_slots": running_slots,
            "workers": w,
        }

    regions: dict[str, dict[str, Any]] = {}
    for qu in queues:
        region = regions.setdefault(qu.site.region or "-", {"sites": {}})
        site = region["sites"].setdefault(qu.site.name, {"queues": []})
        c = by_queue.get(qu.name, {})
        queue_row = summarise(qu.name, c, slots.get(qu.name, 0), worker_counts.get(qu.name, {}))
        queue_row["status"] = qu.status
        site["queues"].append(queue_row)

    def merge(rows: Iterable[dict[str, Any]]) -> tuple[dict[str, int], int, dict[str, int]]:
        c: dict[str, int] = defaultdict(int)
        w: dict[str, int] = defaultdict(int)
        s = 0
        for r in rows:
            for k, v in r["counts"].items():
                c[k] += v
            for k, v in r["workers"].items():
                w[k] += v
            s += r["running_slots"]
        return dict(c), s, dict(w)

    region_rows, site_rows, queue_rows = [], [], []
    for region_name, region in sorted(regions.items()):
        site_summaries = []
        for site_name, site in sorted(region["sites"].items()):
            c, s, w = merge(site["queues"])
            summary = summarise(site_name, c, s, w)
            summary["region"] = region_name
            site_summaries.append(summary)
            for qrow in site["queues"]:
                qrow["site"] = site_name
                qrow["region"] = region_name
                queue_rows.append(qrow)
        c, s, w = merge(site_summaries)
        region_rows.append(summarise(region_name, c, s, w))
        site_rows.extend(site_summaries)
    return {"regions": region_rows, "sites": site_rows, "queues": queue_rows}


def _queue_state_rows(since: datetime | None, until: datetime | None) -> list[Mapping[str, Any]]:
    """Placed jobs per (queue, state): `{queue_id, jobstatus, n, cores}` rows, the one definition of
    a queue's jobs by state that `/`, `/dash/` and `/sites/` show. Active states are counted whatever
    their age (PanDA does the same); final states only in the window, on the indexed (queue,
    jobstatus, statechangetime). `cores`: the requested cores, which `/dash/` adds up for running jobs."""
    window = Q(jobstatus__in=[s.value for s in JOB_FINAL], queue__isnull=False)
    if since is not None:
        window &= Q(statechangetime__gte=since)
    if until is not None:
        window &= Q(statechangetime__lt=until)
    # Two queries, each on its own index: active jobs (job_active_queue_idx) and final ones in
    # the window (job_window_summary_idx, index-only). One query with an OR scans the table.
    active = Q(jobstatus__in=[s.value for s in JOB_NON_FINAL], queue__isnull=False)
    cut = rollups.Window.of(since, until) if since is not None and rollups.enabled() else None
    # Scanned final jobs of a window reaching the archive's horizon include the archived ones.
    scans: list[tuple[Any, Q]] = [(Job, active)]
    if cut is None:
        scans.append((Job, window))
        if archive_reached(since):
            scans.append((ArchivedJob, window))
    counts: list[Mapping[str, Any]] = [
        row
        for model, selected in scans
        for row in model._default_manager.filter(selected)
        .order_by()
        .values("queue_id", "jobstatus")
        .annotate(n=Count("*"), cores=Sum("request_cores"))  # COUNT(*): answerable from the index
    ]
    if cut is not None:
        # Final jobs of the window from the per-hour summary plus the partial hours (decision 0003).
        counts += [
            {"queue_id": queue, "jobstatus": status, "n": n, "cores": 0}
            for queue, status, n in rollups.queue_state_rows(cut, states=[s.value for s in JOB_FINAL])
        ]
    if len(scans) < 3:
        return counts
    # The live and the archived final jobs of one (queue, state) are one row.
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in counts:
        key = (row["queue_id"], row["jobstatus"])
        if key in merged:
            merged[key]["n"] += row["n"]
            merged[key]["cores"] = (merged[key]["cores"] or 0) + (row["cores"] or 0)
        else:
            merged[key] = dict(row)
    return list(merged.values())


def site_detail(name: str) -> Site | None:
    return Site.objects.filter(name=name).first()


@dataclass(frozen=True)
class SiteStats:
    """`/site/<name>/`'s two tables: per queue (finished, failed, failure %, mean walltime, CPU
    efficiency, max RSS) and per worker node (finished, failed, failure %, PanDA's outlier tag)."""

    queues: list[dict[str, Any]]
    nodes: list[dict[str, Any]]


def site_job_stats(queues: Sequence[str], since: datetime | None, until: datetime | None) -> SiteStats:
    """The finished and failed jobs of a site's queues in the window, by queue and by node.

    1. One GROUP BY (queue, node, state) of the live jobs: counts, walltime sum and count,
       CPU-per-core sum and count, max RSS. On PostgreSQL index-only from `job_ended_stats_idx`
       and its generated columns (`_ENDED_GROUPS_SQL`), elsewhere the same over the job columns.
       Sums, not means, so that groups merge: counts, walltime (whole microseconds) and RSS
       exactly, the CPU sum to float rounding (the additions run in another order than one AVG's).
    2. The same over the archive when the window reaches its horizon (decision 0012): the site's
       numbers stay the same after the move.
    3. Queue rows sum their nodes' groups, node rows their queues'; means are sum / count over the
       jobs that have the value, as SQL's AVG takes them.
    Two queries (the archive's horizon, the live jobs), three when the window reaches the archive.
    """
    reached = archive_reached(since)
    if not queues:
        return SiteStats(queues=[], nodes=[])
    groups = _ended_groups_postgresql if connection.vendor == "postgresql" else _ended_groups
    rows = groups(queues, since, until)
    if reached:
        rows += _ended_groups(queues, since, until, model=ArchivedJob)
    by_queue: dict[str, _Sums] = defaultdict(_Sums)
    by_node: dict[str, _Sums] = defaultdict(_Sums)
    for row in rows:
        by_queue[row["queue_id"]].add(row)
        if row["node"]:
            by_node[row["node"]].add(row)
    return SiteStats(
        queues=[by_queue[q].queue_row(q) for q in sorted(by_queue)],
        nodes=_node_outliers(by_node),
    )


# Raw SQL: the generated columns it reads are not in the model (dispatcher migration 0016 says why).
_ENDED_GROUPS_SQL = """
SELECT computingsite, ended_node, jobstatus, count(*), sum(ended_walltime), count(ended_walltime),
       sum(ended_cpu_per_core), count(ended_cpu_per_core), max(ended_max_rss_kb)
FROM dispatcher_job
WHERE computingsite = ANY(%s) AND jobstatus IN ('finished', 'failed') {window}
GROUP BY 1, 2, 3
"""
_GROUP_KEYS = ("queue_id", "node", "jobstatus", "n", "wall_sum", "wall_n", "cpu_sum", "cpu_n", "max_rss")


def _ended_groups_postgresql(
    queues: Sequence[str], since: datetime | None, until: datetime | None
) -> list[Mapping[str, Any]]:
    bounds = [
        (sql, value)
        for sql, value in (("AND statechangetime >= %s ", since), ("AND statechangetime < %s", until))
        if value is not None
    ]
    # With the aggregate's work_mem the (queue, node, state) groups are hashed: sorted in the
    # default 4 MB, a week of a site's 275,000 ended jobs spilled to disk (~190 of its 260 ms).
    rows = _fetch_aggregate(
        _ENDED_GROUPS_SQL.format(window="".join(sql for sql, _ in bounds)),
        [list(queues), *(value for _, value in bounds)],
    )
    return [dict(zip(_GROUP_KEYS, row, strict=True)) for row in rows]


def _ended_groups(
    queues: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    *,
    model: type[Job] | type[ArchivedJob] = Job,
) -> list[Mapping[str, Any]]:
    """`_ENDED_GROUPS_SQL` with the ORM, over the job columns: the archive (index-only on
    `jobarchive_ended_stats_idx`: its rows never change, so they may include the metrics) and the
    live jobs on SQLite."""
    window = Q(queue_id__in=list(queues), jobstatus__in=[JobStatus.FINISHED, JobStatus.FAILED])
    if since is not None:
        window &= Q(statechangetime__gte=since)
    if until is not None:
        window &= Q(statechangetime__lt=until)
    wall = ExpressionWrapper(F("endtime") - F("starttime"), output_field=DurationField())
    cpu = ExpressionWrapper(F("cpu_time_s") / F("request_cores"), output_field=FloatField())
    return list(
        model._default_manager.filter(window)
        .order_by()
        .values("queue_id", "node", "jobstatus")
        .annotate(
            n=Count("*"),  # not pandaid: no heap fetch
            wall_sum=Sum(wall),
            wall_n=Count(wall),
            cpu_sum=Sum(cpu),
            cpu_n=Count(cpu),
            max_rss=Max("max_rss_kb"),
        )
    )


@dataclass
class _Sums:
    """One queue's or node's finished/failed jobs, summed over (queue, node, state) groups."""

    finished: int = 0
    failed: int = 0
    wall_sum: timedelta = timedelta(0)
    wall_n: int = 0
    cpu_sum: float = 0.0
    cpu_n: int = 0
    max_rss: int | None = None

    def add(self, row: Mapping[str, Any]) -> None:
        if row["jobstatus"] == JobStatus.FINISHED:
            self.finished += row["n"]
        else:
            self.failed += row["n"]
        if row["wall_n"]:
            self.wall_sum += row["wall_sum"]
            self.wall_n += row["wall_n"]
        if row["cpu_n"]:
            self.cpu_sum += float(row["cpu_sum"])
            self.cpu_n += row["cpu_n"]
        if row["max_rss"] is not None:
            self.max_rss = max(self.max_rss or 0, int(row["max_rss"]))

    def queue_row(self, queue: str) -> dict[str, Any]:
        finished, failed, max_rss = self.finished, self.failed, self.max_rss
        wall = self.wall_sum.total_seconds() / self.wall_n if self.wall_n else None
        cpu = self.cpu_sum / self.cpu_n if self.cpu_n else None
        return {
            "queue": queue,
            "finished": finished,
            "failed": failed,
            "failure_pct": 100 * failed / (finished + failed) if finished + failed else None,
            "mean_walltime_s": wall,
            "cpu_efficiency_pct": 100 * cpu / wall if wall and cpu is not None else None,
            "max_rss_kb": max_rss,
            "max_rss_mb": units.mb_from_kb(max_rss),
        }


def _node_outliers(by_node: Mapping[str, _Sums]) -> list[dict[str, Any]]:
    """Worker nodes with their finished/failed counts and PanDA's outlier tags, outliers first."""
    total_f = sum(s.failed for s in by_node.values())
    total = sum(s.failed + s.finished for s in by_node.values())
    site_rate = total_f / total if total else 0.0
    result: list[dict[str, Any]] = []
    for node, s in by_node.items():
        n = s.failed + s.finished
        rate = s.failed / n if n else 0.0
        tag = ""
        if s.failed > 5 and rate >= 0.10:
            if rate >= 0.5 or (site_rate and rate >= 10 * site_rate):
                tag = "VeryHighFailed"
            elif rate >= 0.2 or (site_rate and rate >= 5 * site_rate):
                tag = "HighFailed"
        result.append(
            {"node": node, "finished": s.finished, "failed": s.failed, "failure_pct": 100 * rate, "tag": tag}
        )
    result.sort(key=lambda r: (-r["failure_pct"], r["node"]))
    return result


def site_workers_by_state(site: Site) -> dict[str, int]:
    rows = Worker.objects.filter(queue__site=site).order_by().values("status").annotate(n=Count("id"))
    return {r["status"]: r["n"] for r in rows}


def queue_state_counts(since: datetime | None, until: datetime | None) -> dict[str, dict[str, int]]:
    """Per queue job counts by state (the /sites/ table): active jobs whatever their age, final ones
    in the window, as `/dash/` counts them (`_queue_state_rows`)."""
    result: dict[str, dict[str, int]] = defaultdict(dict)
    for row in _queue_state_rows(since, until):
        result[row["queue_id"]][row["jobstatus"]] = row["n"]
    return result


def queues_with_sites() -> list[Queue]:
    return list(Queue.objects.select_related("site").order_by("site__region", "site__name", "name"))
