"""The filter summary (decision 0013): /jobs/ under one filter on a queue, a site, a region, a user,
a label or a task (a value, several, a negation, a wildcard), with or without states, is read from
the summaries and equals the plain scan, whatever the writes and wherever the folds fall. Other
combinations are scanned and the page says so; a read past the web's statement timeout is a 503."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from pandamon import queries, rollup_sql, rollups
from pandamon.filters import JOB_FIELDS, compile_selection
from pandamon.models import JobFilterDaySummary, JobFilterSummary
from tests.factories import QueueFactory, SiteFactory, TaskFactory
from tests.pandamon.test_rollups import NOW, OPS, QUEUES, _apply, _time

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("postgres_only"),  # the rollups are PostgreSQL's
]

# Q_A at a CERN site, Q_B and Q_C at a US site (tests.test_rollups' queues).
FILTERS = (
    "computingsite=Q_A",
    "computingsite=!Q_A",
    "computingsite=Q_*",
    "computingsite=!Q_B|!Q_C",
    "computingsite=Q_*|!Q_C",
    "computingsite=*",
    "computingsite=Not specified",
    "computingsite=!Q_*",
    "site=SITE_US",
    "site=!SITE_US",
    "site=SITE_*",
    "region=US",
    "region=!US",
    "region=CERN|US",
    "label=label0",
    "label=!label0",
    "label=lab*",
    "produsername=!nobody",
    "jeditaskid=TASK0",
    "jeditaskid=!TASK0",
    "jeditaskid=TASK0|TASK1",
    # Two filters of a pair (decision 0016): a queue, a site or a region with a label or a user.
    "region=US&label=label0",
    "computingsite=Q_A&label=label1",
    "computingsite=Q_*&label=label0|label1",
    "site=SITE_US&produsername=USER0",
    "computingsite=Not specified&produsername=USER1",
    "region=CERN|US&produsername=USER0|USER1",
)
FILTERED_WINDOWS = st.tuples(
    st.integers(61, 7 * 60),  # since, minutes before NOW: at least one whole hour
    st.one_of(st.none(), st.integers(121, 5 * 60)),
    st.sampled_from(FILTERS),
    st.one_of(st.none(), st.sampled_from(["finished", "failed|finished", "running"])),
)


def _world() -> list[Any]:
    cern, us = SiteFactory(name="SITE_CERN", region="CERN"), SiteFactory(name="SITE_US", region="US")
    for name in QUEUES:
        QueueFactory(name=name, site=cern if name == "Q_A" else us)
    return [TaskFactory(), TaskFactory()]


def _params(spec: str, tasks: list[Any], since: datetime, until: datetime | None) -> dict[str, str]:
    params = {"date_from": since.strftime("%Y-%m-%dT%H:%M:%S")}
    for part in spec.split("&"):
        name, _, value = part.partition("=")
        for i, task in enumerate(tasks):
            value = value.replace(f"TASK{i}", str(task.jeditaskid)).replace(f"USER{i}", task.username)
        params[name] = value
    if until is not None:
        params["date_to"] = until.strftime("%Y-%m-%dT%H:%M:%S")
    return params


def _check(params: dict[str, str]) -> None:
    sel = compile_selection(params, JOB_FIELDS, time_column="statechangetime", default_hours=None, now=NOW)
    rollup = queries.job_rollup_selection(sel.since, sel.until, sel.applied)
    assert rollup is not None and rollup.dim is not None, params
    unit = "hour"
    assert queries.jobs_facets(sel.q, unit=unit, rollup=rollup) == queries.jobs_facets(sel.q, unit=unit), (
        params
    )


def _reads_equal_scans_before_and_after_folds(
    ops: list[tuple[str, int, int, int]],
    windows: list[tuple[int, int | None, str, str | None]],
    *,
    stretch: int = 1,
) -> None:
    """Run the operations (spread by `stretch`), then check each window (since, minutes before
    NOW; length in minutes or open; filter; states) against the scan, folded in small batches
    and not; no summary row is left at zero."""
    tasks = _world()
    _apply(ops, tasks, stretch=stretch)
    cases = []
    for since_min, length, spec, jobstatus in windows:
        since = _time(since_min)
        until = since + timedelta(minutes=length) if length else None
        params = _params(spec, tasks, since, until)
        if jobstatus:
            params["jobstatus"] = jobstatus
        cases.append(params)
        _check(params)
    while rollups.rollups_fold(batch=7):
        pass
    assert not JobFilterSummary.objects.filter(count=0).exists()
    assert not JobFilterDaySummary.objects.filter(count=0).exists()
    for params in cases:
        _check(params)


class TestFilteredRollupsEqualScans(HypothesisTestCase):
    @given(ops=OPS, windows=st.lists(FILTERED_WINDOWS, min_size=1, max_size=4))
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_filtered_reads_equal_the_scans_after_any_writes_and_folds(
        self, ops: list[tuple[str, int, int, int]], windows: list[tuple[int, int | None, str, str | None]]
    ) -> None:
        _reads_equal_scans_before_and_after_folds(ops, windows)


# The operations' six hours stretched over three days (decision 0019), and windows holding whole
# UTC days (NOW is 12:37): the days' facets are read per day, the hours around them per hour.
DAY_STRETCH = 12
DAY_WINDOWS = st.tuples(
    st.integers(25 * 60, 80 * 60),  # since, minutes before NOW
    st.one_of(st.none(), st.integers(24 * 60, 60 * 60)),
    st.sampled_from(FILTERS),
    st.one_of(st.none(), st.sampled_from(["finished", "failed|finished", "running"])),
)


class TestFilteredRollupsOverDaysEqualScans(HypothesisTestCase):
    @given(ops=OPS, windows=st.lists(DAY_WINDOWS, min_size=1, max_size=4))
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_reads_of_whole_days_equal_the_scans_after_any_writes_and_folds(
        self, ops: list[tuple[str, int, int, int]], windows: list[tuple[int, int | None, str, str | None]]
    ) -> None:
        _reads_equal_scans_before_and_after_folds(ops, windows, stretch=DAY_STRETCH)


def test_a_days_rows_are_the_sums_of_its_hours_rows() -> None:
    """The day level, folded, equals the hours added up per UTC day (every facet but the state)."""
    tasks = _world()
    _apply([("insert", i, i * 37, i * 11) for i in range(40)], tasks, stretch=DAY_STRETCH)
    _apply([("transition", i, i * 13, i) for i in range(40)], tasks, stretch=DAY_STRETCH)
    while rollups.rollups_fold(batch=5):
        pass
    cols = ("jobstatus", "dim", "dimvalue", "facet", "value")
    hours: Counter[tuple[Any, ...]] = Counter()
    for row in JobFilterSummary.objects.exclude(facet="jobstatus").values_list("bucket", *cols, "count"):
        hours[(row[0].date(), *row[1:-1])] += row[-1]
    days = {
        (row[0].date(), *row[1:-1]): row[-1]
        for row in JobFilterDaySummary.objects.values_list("bucket", *cols, "count")
    }
    assert len({day for day, *_ in days}) >= 3
    assert days == {key: n for key, n in hours.items() if n}


def test_a_window_of_whole_days_reads_the_day_level() -> None:
    """Not only equal (above): the days' facets come from the day rows, their state per hour."""
    tasks = _world()
    _apply([("insert", i, i * 37, i * 11) for i in range(40)], tasks, stretch=DAY_STRETCH)
    rollups.rollups_fold()
    window = rollups.Window.of(NOW - timedelta(days=3), NOW)
    assert window is not None
    dim = rollups.DimFilter("jeditaskid", (("eq", tuple(str(t.jeditaskid) for t in tasks)),))
    source, params = rollups._summary_source(dim, window)
    assert rollup_sql.FILTER_DAY_SUMMARY_TABLE in source and "facet = 'jobstatus'" in source
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT bucket, facet FROM {source} s", params)  # noqa: S608
        rows = cursor.fetchall()
    d0, d1 = datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    inside = [(b, f) for b, f in rows if d0 <= b < d1]
    assert {b for b, f in inside if f != "jobstatus"} == {d0, d0 + timedelta(days=1)}  # per day
    assert len({b for b, f in inside if f == "jobstatus"}) > 2  # the chart's hours
    assert any(f != "jobstatus" and b >= d1 for b, f in rows)  # the hours after the days, per hour
    _check(_params("jeditaskid=TASK0|TASK1", tasks, NOW - timedelta(days=3), NOW))


def test_every_filter_of_the_list_is_answered_by_the_summaries() -> None:
    tasks = _world()
    _apply([("insert", i, i * 37, i * 11) for i in range(40)], tasks)
    _apply([("transition", i, i * 13, i) for i in range(40)], tasks)
    rollups.rollups_fold()
    _apply([("bulk_update", i, i * 7, i) for i in range(0, 40, 5)], tasks)  # deltas not folded yet
    since = _time(6 * 60)
    for spec in FILTERS:
        _check(_params(spec, tasks, since, None))


def test_a_rebuild_gives_the_folded_filter_summary() -> None:
    tasks = _world()
    _apply([("insert", i, i * 37, i * 11) for i in range(30)], tasks)
    _apply([("transition", i, i * 13, i) for i in range(30)], tasks)
    while rollups.rollups_fold():
        pass
    cols = ("bucket", "jobstatus", "dim", "dimvalue", "facet", "value", "count")
    folded = set(JobFilterSummary.objects.values_list(*cols))
    assert folded
    rollups.rollups_rebuild()
    assert set(JobFilterSummary.objects.values_list(*cols)) == folded


def test_the_page_says_which_selections_it_scanned(client: Any) -> None:
    tasks = _world()
    _apply([("insert", i, i * 37, i * 11) for i in range(10)], tasks)
    summed = client.get("/jobs/", {"days": "2", "region": "US", "json": "1"}).json()
    assert summed["counted_by"] == "summaries"
    pair = client.get("/jobs/", {"days": "2", "region": "US", "label": "label0", "json": "1"}).json()
    assert pair["counted_by"] == "summaries"
    # Two filters of no pair, or a negation within a pair: scanned.
    for two in ({"label": "label0", "produsername": "nobody"}, {"region": "!US", "label": "label0"}):
        answer = client.get("/jobs/", {"days": "2", **two, "json": "1"}).json()
        assert answer["counted_by"] == "scan" and answer["scan_estimate_rows"] >= 0, two
    page = client.get("/jobs/", {"days": "2", "region": "!US", "label": "label0"})
    assert b"counted by scanning the selection" in page.content
    assert b"counted by scanning" not in client.get("/jobs/", {"days": "2", "region": "US"}).content


def test_a_read_past_the_statement_timeout_answers_503_saying_what_to_narrow(
    client: Any, monkeypatch: Any
) -> None:
    from django.conf import settings as django_settings

    monkeypatch.setitem(django_settings.AILURO, "WEB_STATEMENT_TIMEOUT_MS", 50)

    def slow(*args: Any, **kwargs: Any) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(2)")
        return None

    monkeypatch.setattr(queries.jobs, "jobs_facets", slow)
    response = client.get("/jobs/", {"days": "2"})
    assert response.status_code == 503
    assert b"Narrow it" in response.content


def test_a_pair_value_is_the_same_in_python_and_sql_and_unambiguous() -> None:
    values = [("Q_1:2", "x"), ("Q_1", ":2x"), ("", "coadd"), ("Q", "ü:1")]
    with connection.cursor() as cursor:
        for first, second in values:
            expr = rollup_sql.filter_dim_value_sql("t", "queue+label")
            sql = f"SELECT {expr} FROM (VALUES (%s, %s)) AS t(computingsite, label)"  # noqa: S608
            cursor.execute(sql, [first, second])
            assert cursor.fetchone()[0] == rollup_sql.pair_value(first, second)
    assert len({rollup_sql.pair_value(a, b) for a, b in values}) == len(values)
