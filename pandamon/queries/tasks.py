"""Named reads of `/tasks/` and `/task/<jeditaskid>/`: task pages with exact job counts (the task
counters), facets, the task's top errors, and the walltime and memory profile of its jobs.

The profile has no rollup (one task's jobs, on job_task_status_idx): on PostgreSQL it is one
statement (histograms by GROUPING SETS, the slowest jobs by a top-N sort); on SQLite one ORM read
of the task's timed jobs, binned and sorted in Python.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from django.db.models import Count, Q

from ailuro import units
from dispatcher.models import ArchivedJob, Job, Task
from dispatcher.queries import CoreUse, task_state_counts, tasks_core_use
from dispatcher.services.budgets import budget_default, budget_of
from dispatcher.states import JobStatus
from pandamon import charts, rollups
from pandamon.queries.common import utc_text
from pandamon.queries.errors import task_error_groups
from pandamon.sql import _fetch_aggregate

_ENDED = (JobStatus.FINISHED.value, JobStatus.FAILED.value)


def tasks_page(
    q: Q, *, cursor: int | None, limit: int
) -> tuple[list[Task], dict[int, dict[str, int]], int | None]:
    """A page of tasks, newest first (keyset on jeditaskid), with exact per-state job counts."""
    qs = Task.objects.filter(q).select_related("workflow")
    if cursor is not None:
        qs = qs.filter(jeditaskid__lt=cursor)
    tasks = list(qs.order_by("-jeditaskid")[: limit + 1])
    next_cursor = None
    if len(tasks) > limit:
        tasks = tasks[:limit]
        next_cursor = tasks[-1].jeditaskid
    counts = task_state_counts([t.jeditaskid for t in tasks])
    return tasks, counts, next_cursor


def task_facets(q: Q) -> dict[str, list[tuple[Any, int]]]:
    """Tasks by status and by user: one GROUP BY (status, username), added up per facet."""
    status: Counter[str] = Counter()
    username: Counter[str] = Counter()
    for row in Task.objects.filter(q).order_by().values("status", "username").annotate(n=Count("*")):
        status[row["status"]] += row["n"]
        username[row["username"]] += row["n"]
    return {
        name: sorted(counts.items(), key=lambda vn: (-vn[1], str(vn[0])))
        for name, counts in (("status", status), ("username", username))
    }


def task_detail(jeditaskid: int) -> Task | None:
    return Task.objects.select_related("workflow__owner").filter(jeditaskid=jeditaskid).first()


@dataclass
class TaskCost:
    """What a task's attempts cost and what its failure budget allows: wasted core-hours (the
    failed attempts' walltime × cores) all time and since its last resume, its budget (label's or
    the site's default, None when off) and what it learned about its requests."""

    wasted_core_s: int
    total_core_s: int
    failed_attempts: int
    attempts: int
    budget: dict[str, Any] | None
    budget_failed_core_s: int
    budget_total_core_s: int
    learned: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "wasted_core_seconds": self.wasted_core_s,
            "wasted_core_hours": round(self.wasted_core_s / 3600, 3),
            "core_seconds": self.total_core_s,
            "failed_attempts": self.failed_attempts,
            "attempts": self.attempts,
            "failure_budget": self.budget,
            "failure_budget_used_core_hours": round(self.budget_failed_core_s / 3600, 3),
            "learned_requests": self.learned,
        }


def task_cost(task: Task) -> TaskCost:
    """The task's `TaskCost`: one GROUP BY over its attempts."""
    archived = task.workflow.archived_at is not None
    use = tasks_core_use([task.pk], archived=archived).get(task.pk) or CoreUse(0, 0, 0, 0)
    since = use.since_resume()
    budget = budget_of(task.failure_budget, budget_default())
    return TaskCost(
        wasted_core_s=use.failed_core_s,
        total_core_s=use.total_core_s,
        failed_attempts=use.failed,
        attempts=use.attempts,
        budget=dict(budget) if budget else None,
        budget_failed_core_s=since.failed_core_s,
        budget_total_core_s=since.total_core_s,
        learned=task.learned,
    )


def task_top_errors(jeditaskid: int, limit: int = 10, *, archived: bool = False) -> list[dict[str, Any]]:
    """The task's failed attempts by family:code → template, with sample jobs: what
    /errors/?jeditaskid= lists (the page links each count there)."""
    return task_error_groups(jeditaskid, archived=archived)[:limit]


@dataclass
class TaskJobProfile:
    """Histograms as (lo, hi, count) bins in minutes and MB, and the slowest jobs."""

    histograms: dict[str, list[tuple[float, float, int]]]
    slowest: list[dict[str, Any]]


def task_job_profile(task: Task, *, slowest: int = 10) -> TaskJobProfile:
    """Walltime (minutes) and peak RSS (MB) histograms of the task's finished and failed jobs, and
    its slowest jobs.

    Bins sized to the data: the scan counts jobs by a grain of a power of ten about 1/100 of the
    task's request (`charts.grain`: at least 0.1 min and 1 MB; some hundred groups for a task's
    range, where whole seconds or kB would be thousands), then the grains merge into at most 21
    bins of a 1/2/5 × 10^k width with their real edges. Walltimes are whole seconds, rounded half
    away from zero as PostgreSQL's ::bigint rounds; a bin is [lo, hi) (floor division).
    """
    wall_grain_s = int(charts.grain(Fraction(task.walltime_s, 60), finest=Fraction(1, 10)) * 60)
    rss_grain_kb = int(charts.grain(Fraction(task.memory_mb), finest=1) * units.KB_PER_MB)
    archived = task.workflow.archived_at is not None  # its jobs are in the archive
    if rollups.enabled():
        wall, rss, slow = _task_profile_postgresql(
            task.jeditaskid, wall_grain_s, rss_grain_kb, slowest, archived
        )
    else:
        wall, rss, slow = _task_profile_orm(task.jeditaskid, wall_grain_s, rss_grain_kb, slowest, archived)
    slow.sort(key=lambda j: (-j["walltime"].total_seconds(), j["pandaid"]))
    return TaskJobProfile(
        histograms={
            "walltime_min": charts.histogram_bins(wall, wall_grain_s, 60),
            "max_rss_mb": charts.histogram_bins(rss, rss_grain_kb, units.KB_PER_MB),
        },
        slowest=slow,
    )


_Profile = tuple[dict[int, int], dict[int, int], list[dict[str, Any]]]
_SLOW_FIELDS = ("pandaid", "name", "jobstatus", "queue_id", "walltime", "max_rss_kb")


def _task_profile_postgresql(
    jeditaskid: int, wall_bin_s: int, rss_bin_kb: int, slowest: int, archived: bool
) -> _Profile:
    wall: dict[int, int] = {}
    rss: dict[int, int] = {}
    slow: list[dict[str, Any]] = []
    rows = _task_profile_rows(jeditaskid, wall_bin_s, rss_bin_kb, slowest, archived)
    for kind, g_wall, w, r, n, *job in rows:
        if kind == "s":
            slow.append(dict(zip(_SLOW_FIELDS, job, strict=True)))
        elif g_wall == 0 and w is not None:
            wall[int(w)] = int(n)
        elif g_wall == 1 and r is not None:
            rss[int(r)] = int(n)
    return wall, rss, slow


def _task_profile_rows(
    jeditaskid: int, wall_bin_s: int, rss_bin_kb: int, slowest: int, archived: bool
) -> list[tuple[Any, ...]]:
    """Rows ('h', GROUPING(w), w, r, count, …) per fine bin and ('s', …, pandaid, name, status,
    queue, walltime, max RSS) per slowest job."""
    ended = [JobStatus.FINISHED.value, JobStatus.FAILED.value]
    # With the aggregate settings: the planner cannot estimate the bins and would sort on disk (and
    # JIT-compile) instead of hashing the groups; measured 390 ms → ~130 ms for 80,000 jobs.
    table = "dispatcher_archivedjob" if archived else "dispatcher_job"
    return _fetch_aggregate(
        f"""SELECT 'h', GROUPING(w), w, r, COUNT(*), NULL::bigint, NULL, NULL, NULL, NULL::interval, NULL::bigint
           FROM (SELECT s / %s - (s %% %s < 0)::int AS w, max_rss_kb / %s - (max_rss_kb %% %s < 0)::int AS r
                 FROM (SELECT EXTRACT(EPOCH FROM (endtime - starttime))::bigint AS s, max_rss_kb
                       FROM {table} WHERE jeditaskid = %s AND jobstatus = ANY(%s)) t) h
           GROUP BY GROUPING SETS ((w), (r))
           UNION ALL
           (SELECT 's', NULL, NULL, NULL, NULL, pandaid, name, jobstatus, computingsite, endtime - starttime,
                   max_rss_kb
            FROM {table} WHERE jeditaskid = %s AND starttime IS NOT NULL AND endtime IS NOT NULL
            ORDER BY endtime - starttime DESC, pandaid LIMIT %s)""",  # noqa: S608  (one of two table names)
        [wall_bin_s, wall_bin_s, rss_bin_kb, rss_bin_kb, jeditaskid, ended, jeditaskid, slowest],
    )


def _task_profile_orm(
    jeditaskid: int, wall_bin_s: int, rss_bin_kb: int, slowest: int, archived: bool
) -> _Profile:
    """The same from one ORM read of the task's ended or timed jobs, binned by the same grain as the PostgreSQL scan.
    The times are read as their stored UTC text (`utc_text`) and parsed here: through the
    DateTimeField converter, 2 × 20,000 of them took most of the page for a 20,000-job task."""
    wall: Counter[int] = Counter()
    rss: Counter[int] = Counter()
    timed: list[tuple[timedelta, int, str, str, str | None, int | None]] = []
    jobs = (
        (ArchivedJob if archived else Job)
        ._default_manager.filter(
            Q(jobstatus__in=_ENDED) | Q(starttime__isnull=False, endtime__isnull=False), task_id=jeditaskid
        )
        .values_list(
            "pandaid",
            "name",
            "jobstatus",
            "queue_id",
            utc_text("starttime"),
            utc_text("endtime"),
            "max_rss_kb",
        )
    )
    for pandaid, name, status, queue, start, end, max_rss in jobs:
        # Both UTC: the difference of the naive times is the walltime.
        walltime = datetime.fromisoformat(end) - datetime.fromisoformat(start) if start and end else None
        if status in _ENDED:
            if walltime is not None:
                wall[_whole_seconds(walltime) // wall_bin_s] += 1
            if max_rss is not None:
                rss[max_rss // rss_bin_kb] += 1
        if walltime is not None:
            timed.append((walltime, pandaid, name, status, queue, max_rss))
    slow = heapq.nsmallest(slowest, timed, key=lambda j: (-j[0], j[1]))
    return (
        dict(wall),
        dict(rss),
        [
            dict(zip(_SLOW_FIELDS, (pandaid, name, status, queue, walltime, max_rss), strict=True))
            for walltime, pandaid, name, status, queue, max_rss in slow
        ],
    )


def _whole_seconds(d: timedelta) -> int:
    """A duration in seconds rounded half away from zero (PostgreSQL's numeric → bigint)."""
    micro = d // timedelta(microseconds=1)
    seconds, rest = divmod(abs(micro), 1_000_000)
    seconds += rest >= 500_000
    return seconds if micro >= 0 else -seconds
