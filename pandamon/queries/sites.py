"""Named reads of `/dash/`, `/sites/` and `/site/<name>/`: jobs per region, site and queue by
state, per-queue statistics, worker-node outliers.

Active jobs are counted from their partial index whatever their age; final jobs of a window on
PostgreSQL from the per-hour summary plus the partial hours (`rollups.queue_state_rows`, decision
0003), elsewhere (SQLite, all time) with one ORM GROUP BY on the indexed (queue, jobstatus,
statechangetime).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, FloatField, Max, Q, Sum

from ailuro import units
from dispatcher.models import ArchivedJob, Job, Queue, Site
from dispatcher.queries import archive_reached
from dispatcher.states import JOB_FINAL, JOB_NON_FINAL, JobStatus
from harvester.models import Worker
from pandamon import rollups


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


def site_queue_stats(site: Site, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    """Per queue of a site: finished/failed in the window, mean walltime, CPU efficiency, max RSS."""
    window = Q(queue__site=site, jobstatus__in=[JobStatus.FINISHED, JobStatus.FAILED])
    if since is not None:
        window &= Q(statechangetime__gte=since)
    if until is not None:
        window &= Q(statechangetime__lt=until)
    rows: Iterable[Mapping[str, Any]] = (
        Job.objects.filter(window)
        .order_by()
        .values("queue_id")
        .annotate(
            finished=Count("pandaid", filter=Q(jobstatus=JobStatus.FINISHED)),
            failed=Count("pandaid", filter=Q(jobstatus=JobStatus.FAILED)),
            wall=Avg(ExpressionWrapper(F("endtime") - F("starttime"), output_field=DurationField())),
            cpu=Avg(ExpressionWrapper(F("cpu_time_s") / F("request_cores"), output_field=FloatField())),
            max_rss=Max("max_rss_kb"),
        )
        .order_by("queue_id")
    )
    result = []
    for row in rows:
        finished, failed, cpu, max_rss = row["finished"], row["failed"], row["cpu"], row["max_rss"]
        wall = row["wall"].total_seconds() if row["wall"] is not None else None
        result.append(
            {
                "queue": row["queue_id"],
                "finished": finished,
                "failed": failed,
                "failure_pct": 100 * failed / (finished + failed) if finished + failed else None,
                "mean_walltime_s": wall,
                "cpu_efficiency_pct": 100 * float(cpu) / wall if wall and cpu is not None else None,
                "max_rss_kb": int(max_rss) if max_rss is not None else None,
                "max_rss_mb": units.mb_from_kb(int(max_rss) if max_rss is not None else None),
            }
        )
    return result


def site_node_outliers(
    site: Site, since: datetime | None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Worker nodes of a site with finished/failed counts in the window (the same jobs as
    `site_queue_stats` counts, by node) and PanDA's outlier tags."""
    window = Q(queue__site=site, jobstatus__in=[JobStatus.FINISHED, JobStatus.FAILED]) & ~Q(node="")
    if since is not None:
        window &= Q(statechangetime__gte=since)
    if until is not None:
        window &= Q(statechangetime__lt=until)
    rows: list[Mapping[str, Any]] = list(
        Job.objects.filter(window)
        .order_by()
        .values("node")
        .annotate(
            finished=Count("pandaid", filter=Q(jobstatus=JobStatus.FINISHED)),
            failed=Count("pandaid", filter=Q(jobstatus=JobStatus.FAILED)),
        )
    )
    total_f = sum(r["failed"] for r in rows)
    total = sum(r["failed"] + r["finished"] for r in rows)
    site_rate = total_f / total if total else 0.0
    result: list[dict[str, Any]] = []
    for r in rows:
        n = r["failed"] + r["finished"]
        rate = r["failed"] / n if n else 0.0
        tag = ""
        if r["failed"] > 5 and rate >= 0.10:
            if rate >= 0.5 or (site_rate and rate >= 10 * site_rate):
                tag = "VeryHighFailed"
            elif rate >= 0.2 or (site_rate and rate >= 5 * site_rate):
                tag = "HighFailed"
        result.append({**r, "failure_pct": 100 * rate, "tag": tag})
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
