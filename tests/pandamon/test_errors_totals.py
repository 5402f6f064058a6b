"""/errors/ totals are the sums of their rows, in every view: whatever failures were recorded (any
families, codes, diags, tasks, queues, users, times, walltimes and cores; folded into the rollups or
not; jobs deleted since), for any window, filter and split mode, each failed attempt is counted once
in the total and in each split, and once in each family it has a code in; and so are its wasted
core-seconds (walltime × cores), in the total, in each split (workflow included) and in each group.

Runs on PostgreSQL (rollups, one statement) and on SQLite (ORM counts):
`DATABASE_URL=sqlite:////tmp/x.sqlite3 python -m pytest -q tests/pandamon/test_errors_totals.py`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Q
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from dispatcher.models import Job
from pandamon import queries, rollups
from tests.factories import JobAttemptFactory, JobFactory, QueueFactory, TaskFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
QUEUES = ("Q_A", "Q_B", "Q_C")
USERS = ("alice", "bob")
# (family, code column, diag column): every family an attempt can carry.
FAMILIES = (
    ("pilot", "piloterrorcode", "piloterrordiag"),
    ("exe", "exeerrorcode", "exeerrordiag"),
    ("trans", "transexitcode", None),
    ("ddm", "ddmerrorcode", "ddmerrordiag"),
    ("jobdispatcher", "jobdispatchererrorcode", "jobdispatchererrordiag"),
    ("sup", "superrorcode", "superrordiag"),
    ("taskbuffer", "taskbuffererrorcode", "taskbuffererrordiag"),
)
CODES = (0, 0, 0, 1, 137, 1201, 1212)
DIAGS = (
    "",
    "Lost heartbeat from wn7.slac.org after 7200 s",
    "Lost heartbeat from wn9.slac.org after 3600 s",
    "KeyError: 'visit'",
    'sqlalchemy.exc.OperationalError: connection to server at "db" (172.18.0.2), port 5432 failed',
    "payload killed by SIGKILL (signal 9, exit 137); peak RSS 4123456 kB (4027 MB of 4000 MB requested)",
)

# One recorded attempt: (job index, minutes ago, seconds, failed?, codes by family, diag choices,
# then fold the rollups?, then delete a job?).
ATTEMPTS = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 8 * 60),
        st.integers(0, 59),
        st.integers(0, 9).map(lambda n: n != 0),
        st.tuples(*(st.sampled_from(CODES) for _ in FAMILIES)),
        st.tuples(*(st.integers(0, len(DIAGS) - 1) for _ in FAMILIES)),
        st.integers(0, 5).map(lambda n: n == 0),
        st.integers(0, 11).map(lambda n: n == 0),
        # walltime in quarter seconds (never x.5: rounding is then the same everywhere), or none;
        # and cores
        st.one_of(st.none(), st.integers(0, 40_000).filter(lambda q: q % 4 != 2).map(lambda q: q / 4)),
        st.integers(1, 8),
    ),
    max_size=25,
)
# One view: (window, filter, its value index); windows in minutes before NOW, cutting hours.
VIEWS = st.lists(
    st.tuples(
        st.one_of(
            st.just(("all",)),
            st.tuples(st.just("from"), st.integers(1, 9 * 60)),
            st.tuples(st.just("range"), st.integers(1, 9 * 60), st.integers(1, 5 * 60)),
        ),
        st.sampled_from(["", "jeditaskid", "computingsite", "produsername"]),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=4,
)


@dataclass(frozen=True)
class Recorded:
    pandaid: int
    task: int
    queue: str
    user: str
    endtime: Any
    codes: tuple[int, ...]
    core_s: int = 0
    workflow: int = 0


def _when(minutes: int, seconds: int) -> Any:
    return NOW - timedelta(minutes=minutes, seconds=seconds)


def _record(attempts: list[tuple[Any, ...]]) -> list[Recorded]:
    """Write the attempts (and folds and deletions) through the factories; the failed attempts
    still in the database, as the oracle of every view."""
    for name in QUEUES:
        QueueFactory(name=name)
    tasks = [TaskFactory(username=USERS[i % 2]) for i in range(3)]
    jobs = [JobFactory(task=tasks[i % 3], jobstatus="failed", queue_id=QUEUES[i % 3]) for i in range(6)]
    failed: list[Recorded] = []
    attemptnr: Counter[int] = Counter()
    for index, minutes, seconds, is_failed, codes, diags, fold, delete, walltime, cores in attempts:
        job = jobs[index]
        if not Job.objects.filter(pk=job.pk).exists():
            continue
        attemptnr[job.pk] += 1
        queue = QUEUES[(index + attemptnr[job.pk]) % 3]  # a job's attempts run on different queues
        fields: dict[str, Any] = {}
        for (_, code_column, diag_column), code, diag in zip(FAMILIES, codes, diags, strict=True):
            fields[code_column] = code
            if diag_column:
                fields[diag_column] = DIAGS[diag] if code else ""
        JobAttemptFactory(
            job=job,
            attemptnr=attemptnr[job.pk],
            jobstatus="failed" if is_failed else "finished",
            queue=queue,
            endtime=_when(minutes, seconds),
            walltime_s=walltime,
            request_cores=cores,
            **fields,
        )
        if is_failed:
            core_s = round(walltime or 0) * cores
            failed.append(
                Recorded(
                    job.pk, job.task_id, queue, job.produsername, _when(minutes, seconds), codes, core_s,
                    job.workflow_id,
                )
            )  # fmt: skip
        if fold and rollups.enabled():
            rollups.rollups_fold(batch=1 + minutes % 7)
        if delete:
            Job.objects.filter(pk=job.pk).delete()
            failed = [r for r in failed if r.pandaid != job.pk]
    return failed


def _selection(view: tuple[Any, str, int], failed: list[Recorded]) -> tuple[dict[str, str], list[Recorded]]:
    """The query string of a view and the recorded failures it selects."""
    window, name, choice = view
    params: dict[str, str] = {"json": "1"}
    since, until = NOW - timedelta(days=3650), None
    if window[0] == "all":
        params["days"] = "3650"
    else:
        since = _when(window[1], 13)
        params["date_from"] = f"{since:%Y-%m-%dT%H:%M:%S}"
        if window[0] == "range":
            until = since + timedelta(minutes=window[2])
            params["date_to"] = f"{until:%Y-%m-%dT%H:%M:%S}"
    selected = [r for r in failed if r.endtime >= since and (until is None or r.endtime < until)]
    if name == "jeditaskid":
        task = sorted({r.task for r in failed} or {0})[choice % len({r.task for r in failed} or {0})]
        params[name] = str(task)
        selected = [r for r in selected if r.task == task]
    elif name == "computingsite":
        params[name] = QUEUES[choice]
        selected = [r for r in selected if r.queue == QUEUES[choice]]
    elif name == "produsername":
        params[name] = USERS[choice % 2]
        selected = [r for r in selected if r.user == USERS[choice % 2]]
    return params, selected


def _families(groups: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    by_family: Counter[str] = Counter()
    by_key: Counter[str] = Counter()
    core_by_key: Counter[str] = Counter()
    for g in groups:
        by_family[g["family"]] += g["count"]
        by_key[g["key"]] += g["count"]
        core_by_key[g["key"]] += g["core_seconds"]
    return by_family, by_key, +core_by_key


def _expected(selected: list[Recorded]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    by_family: Counter[str] = Counter()
    by_key: Counter[str] = Counter()
    core_by_key: Counter[str] = Counter()
    for r in selected:
        for (family, _, _), code in zip(FAMILIES, r.codes, strict=True):
            if code:
                by_family[family] += 1
                by_key[f"{family}:{code}"] += 1
                core_by_key[f"{family}:{code}"] += r.core_s
    return by_family, by_key, +core_by_key


def _check_view(client: Client, view: tuple[Any, str, int], failed: list[Recorded]) -> None:
    params, selected = _selection(view, failed)
    data = client.get("/errors/", params).json()
    total = data["failed_attempts"]
    # The total: each selected failed attempt once; each split adds up to it, value by value.
    assert total == len(selected), params
    for split, attr in (("by_site", "queue"), ("by_task", "task"), ("by_user", "user")):
        rows = {str(v): n for v, n in data[split]}
        assert sum(rows.values()) == total, (params, split)
        assert rows == {str(k): n for k, n in Counter(getattr(r, attr) for r in selected).items()}, split
    # Wasted core-seconds: each selected failed attempt's once in the total, and each split
    # (workflow included) adds up to it, value by value.
    assert data["core_seconds"] == sum(r.core_s for r in selected), params
    for split, attr in (
        ("core_seconds_by_site", "queue"),
        ("core_seconds_by_task", "task"),
        ("core_seconds_by_user", "user"),
    ):
        core_rows = {str(v): c for v, c in data[split]}
        assert sum(core_rows.values()) == data["core_seconds"], (params, split)
        expected_core: Counter[str] = Counter()
        for r in selected:
            expected_core[str(getattr(r, attr))] += r.core_s
        assert core_rows == dict(expected_core), (params, split)
    assert {wf: (n, c) for wf, n, c in data["by_workflow"]} == {
        wf: (
            sum(1 for r in selected if r.workflow == wf),
            sum(r.core_s for r in selected if r.workflow == wf),
        )
        for wf in {r.workflow for r in selected}
    }, params
    # The groups: an attempt once in each family it has a code in; the chart adds up to the groups.
    by_family, by_key, _ = _families(data["errors"])
    assert _families(data["errors"]) == _expected(selected), params
    over_time: Counter[str] = Counter()
    for _, key, n in data["over_time"]:
        over_time[key] += n
    assert over_time == by_key, params
    assert all(g["count"] > 0 for g in data["errors"]), params
    # The page shows the same total, and its family table the same sums.
    html = client.get("/errors/", {k: v for k, v in params.items() if k != "json"}).content.decode()
    assert re.search(r'id="error-total">(\d+)<', html)[1] == str(total)  # type: ignore[index]
    shown_hours = re.search(r'id="error-core-hours">([\d.]+)<', html)[1]  # type: ignore[index]
    assert float(shown_hours) == round(data["core_seconds"] / 3600, 2), params
    shown = dict(
        re.findall(r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td>", html.split('id="families"')[1])
    )
    assert {k: int(v) for k, v in shown.items()} == dict(by_family), params


def _check_reads(view: tuple[Any, str, int], failed: list[Recorded]) -> None:
    """The named reads behind the page, in both split modes and with and without the rollups."""
    params, selected = _selection(view, failed)
    if view[1]:
        return  # a filter is read live; the page check above covers it
    since = _when(view[0][1], 13) if view[0][0] != "all" else NOW - timedelta(days=3650)
    until = since + timedelta(minutes=view[0][2]) if view[0][0] == "range" else None
    q = Q(endtime__gte=since) & (Q(endtime__lt=until) if until else Q())
    rollup = queries.error_rollup_window(since, until, {})
    expected = _expected(selected)
    for split in (True, False):
        for window in (None, rollup):
            summary = queries.errors_summary(q, unit="hour", split=split, rollup=window)
            assert summary.total_attempts == len(selected), (params, split, window)
            assert summary.total_core_s == sum(r.core_s for r in selected), (params, split, window)
            assert _families(summary.groups) == expected, (params, split, window)
            if split:
                assert sum(n for _, n in summary.by_site) == summary.total_attempts
                assert sum(summary.core_by_site.values()) == summary.total_core_s
                assert sum(c for _, _, c in summary.by_workflow) == summary.total_core_s


def _check_task(failed: list[Recorded]) -> None:
    for task in {r.task for r in failed}:
        mine = [r for r in failed if r.task == task]
        assert _families(queries.task_error_groups(task)) == _expected(mine), task


class TestErrorTotalsAreSumsOfRows(HypothesisTestCase):
    @given(attempts=ATTEMPTS, views=VIEWS)
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_every_total_is_the_sum_of_its_rows(
        self, attempts: list[tuple[Any, ...]], views: list[tuple[Any, str, int]]
    ) -> None:
        failed = _record(attempts)
        for view in views:
            _check_view(self.client, view, failed)
            _check_reads(view, failed)
        _check_task(failed)
