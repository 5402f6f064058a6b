"""The aggregate reads of pandamon/queries/ against a brute-force Python count of the same rows.

Each aggregate has one read per database: on PostgreSQL the rollup statement (here every row read
live, since the selections have filters or no window), on SQLite plain ORM GROUP BYs added up in
Python. The recount here reads the rows one by one and counts them in Python, the same code on
both, so passing on both databases means each backend's read is exact.
tests/core/test_embedded_reads.py runs this directory on SQLite."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from django.db.models import F, Q

from dispatcher.models import Job, JobAttempt
from dispatcher.states import JobStatus
from pandamon import queries
from pandamon.errortext import message_template
from tests.pandamon.conftest import World

pytestmark = pytest.mark.django_db

CODE_FACETS = {"piloterrorcode", "exeerrorcode", "ddmerrorcode", "transexitcode"}


def _python_counts(qs: Any, column: str) -> Counter[Any]:
    """Count the rows of `qs` by `column`, one row at a time."""
    values: Iterable[Any] = qs.values_list(column, flat=True)
    return Counter(values)


def _truncate(t: datetime, unit: str) -> datetime:
    t = t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if unit == "day" else t


@pytest.mark.parametrize("unit", ["hour", "day"])
def test_job_facets_and_chart_equal_a_python_recount(world: World, unit: str) -> None:
    facets = queries.jobs_facets(Q(workflow=world.workflow), unit=unit)
    jobs = Job.objects.filter(workflow=world.workflow)
    assert facets.total == jobs.count() == 13
    for name, column in queries.JOB_FACETS.items():
        expected = _python_counts(jobs, column)
        if name in CODE_FACETS:
            expected = Counter({v: n for v, n in expected.items() if v})
        assert Counter(dict(facets.facets[name])) == expected, name
    over_time = Counter(
        (_truncate(j.statechangetime, unit), j.jobstatus) for j in jobs if j.statechangetime is not None
    )
    assert Counter({(b, s): n for b, s, n in facets.over_time}) == over_time
    assert all(
        b.utcoffset() is not None and b.utcoffset().total_seconds() == 0 for b, _, _ in facets.over_time
    )


def test_error_templates_chart_and_splits_equal_a_python_recount(world: World) -> None:
    summary = queries.errors_summary(Q(), unit="hour")
    failed = list(
        JobAttempt.objects.filter(jobstatus=JobStatus.FAILED).values(
            "job_id",
            "endtime",
            "queue",
            "piloterrorcode",
            "piloterrordiag",
            "exeerrorcode",
            "exeerrordiag",
            # The job's task (independent of the attempt's own copy of it).
            job_task=F("job__task_id"),
            user=F("job__produsername"),
        )
    )
    assert failed, "the world has failed attempts"
    groups: dict[tuple[str, str], list[Any]] = {}
    for a in failed:
        for family in ("pilot", "exe"):
            code = a[f"{family}errorcode"]
            if code:
                diag = a[f"{family}errordiag"]
                g = groups.setdefault((f"{family}:{code}", message_template(diag)), [0, [], []])
                g[0] += 1
                g[1].append(a["job_id"])
                g[2].append(diag)
    got = {(g["key"], g["template"]): g for g in summary.groups}
    assert set(got) == set(groups)
    for key, (n, jobs, diags) in groups.items():
        assert got[key]["count"] == n
        assert got[key]["samples"] == sorted({max(jobs), min(jobs)}, reverse=True)
        assert got[key]["example"] == min(diags)
    # Two lost-heartbeat attempts with different hosts and timeouts share one template.
    assert got[("pilot:1201", "Lost heartbeat from * after * s")]["count"] >= 2
    assert summary.by_site == sorted(
        Counter(a["queue"] for a in failed).items(), key=lambda vn: (-vn[1], vn[0])
    )
    assert dict(summary.by_task) == Counter(a["job_task"] for a in failed)
    assert dict(summary.by_user) == Counter(a["user"] for a in failed)
    assert summary.total_attempts == len(failed)
    assert sum(n for _, _, n in summary.over_time) == sum(n for n, _, _ in groups.values())
    hours = {b for b, _, _ in summary.over_time}
    assert hours == {a["endtime"].replace(minute=0, second=0, microsecond=0) for a in failed}


def test_task_histograms_and_slowest_jobs_equal_a_python_recount(world: World) -> None:
    task = world.tasks["isr"]
    profile = queries.task_job_profile(task)
    ended = list(
        Job.objects.filter(task=task, jobstatus__in=[JobStatus.FINISHED, JobStatus.FAILED]).values(
            "starttime", "endtime", "max_rss_kb"
        )
    )
    walls = [Fraction(round((j["endtime"] - j["starttime"]).total_seconds()), 60) for j in ended]
    rss = [Fraction(j["max_rss_kb"], 1024) for j in ended if j["max_rss_kb"] is not None]
    for name, values in (("walltime_min", walls), ("max_rss_mb", rss)):
        bins = profile.histograms[name]
        # Every value in the bin whose edges contain it; the bins tile the range.
        recount = Counter(
            next(i for i, (lo, hi, _) in enumerate(bins) if Fraction(str(lo)) <= v < Fraction(str(hi)))
            for v in values
        )
        assert [n for _, _, n in bins] == [recount.get(i, 0) for i in range(len(bins))]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bins))
    timed = Job.objects.filter(task=task).exclude(starttime=None).exclude(endtime=None)
    assert [j["pandaid"] for j in profile.slowest] == [
        j.pandaid
        for j in sorted(timed, key=lambda j: (-(j.endtime - j.starttime).total_seconds(), j.pandaid))
    ]
    assert [j["walltime"] for j in profile.slowest] == [
        j.endtime - j.starttime for j in sorted(timed, key=lambda j: (j.starttime - j.endtime, j.pandaid))
    ]


def test_task_facets_and_site_stats_equal_a_python_recount(world: World) -> None:
    from dispatcher.models import Task

    facets = queries.task_facets(Q())
    assert Counter(dict(facets["status"])) == _python_counts(Task.objects.all(), "status")
    assert Counter(dict(facets["username"])) == _python_counts(Task.objects.all(), "username")
    cern = queries.site_detail("CERN")
    assert cern is not None
    site_queues = list(cern.queues.values_list("name", flat=True))
    stats = {s["queue"]: s for s in queries.site_job_stats(site_queues, None, None).queues}
    ended = Job.objects.filter(queue__site=cern, jobstatus__in=[JobStatus.FINISHED, JobStatus.FAILED])
    assert set(stats) == set(ended.values_list("queue_id", flat=True))
    for queue, s in stats.items():
        rows = list(ended.filter(queue_id=queue))
        assert s["finished"] == sum(j.jobstatus == JobStatus.FINISHED for j in rows)
        assert s["failed"] == sum(j.jobstatus == JobStatus.FAILED for j in rows)
        mean = sum((j.endtime - j.starttime).total_seconds() for j in rows) / len(rows)
        assert s["mean_walltime_s"] == pytest.approx(mean, abs=1e-3)
        assert s["max_rss_kb"] == max(j.max_rss_kb for j in rows)
        assert s["max_rss_mb"] == round(max(j.max_rss_kb for j in rows) / 1024 + 1e-9, 1)


def test_window_reads_equal_a_python_recount(world: World) -> None:
    """A plain window: on PostgreSQL the per-hour summaries plus the live edges (decision 0003), on
    SQLite the ORM GROUP BYs; either way the counts of the rows in the window."""
    from django.utils import timezone

    since = timezone.now() - timedelta(days=2, minutes=17)
    facets = queries.jobs_facets(
        Q(statechangetime__gte=since), unit="hour", rollup=queries.job_rollup_selection(since, None, {})
    )
    jobs = [j for j in Job.objects.all() if j.statechangetime is not None and j.statechangetime >= since]
    assert facets.total == len(jobs) > 0
    for name, column in queries.JOB_FACETS.items():
        expected = Counter(getattr(j, column) for j in jobs)
        if name in CODE_FACETS:
            expected = Counter({v: n for v, n in expected.items() if v})
        assert Counter(dict(facets.facets[name])) == expected, name
    assert Counter({(b, s): n for b, s, n in facets.over_time}) == Counter(
        (_truncate(j.statechangetime, "hour"), j.jobstatus) for j in jobs
    )
    summary = queries.errors_summary(
        Q(endtime__gte=since), unit="hour", rollup=queries.error_rollup_window(since, None, {})
    )
    failed = [
        a for a in JobAttempt.objects.select_related("job") if a.jobstatus == "failed" and a.endtime >= since
    ]
    assert summary.total_attempts == len(failed) > 0
    assert dict(summary.by_site) == Counter(a.queue for a in failed)
    assert dict(summary.by_task) == Counter(a.job.task_id for a in failed)
    assert sum(g["count"] for g in summary.groups) == sum(
        (a.piloterrorcode != 0)
        + (a.exeerrorcode != 0)
        + (a.transexitcode != 0)
        + (a.ddmerrorcode != 0)
        + (a.jobdispatchererrorcode != 0)
        + (a.superrorcode != 0)
        + (a.taskbuffererrorcode != 0)
        for a in failed
    )
