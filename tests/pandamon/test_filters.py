"""The PanDA query grammar: compiled to bound ORM lookups, bad values named, unknown ones reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.models import Job
from pandamon.filters import JOB_FIELDS, JOB_UNWINDOWED, FilterError, compile_selection, parse_time, window
from tests.factories import JobFactory

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def compile_jobs(params: dict[str, str]):  # type: ignore[no-untyped-def]
    return compile_selection(
        params,
        JOB_FIELDS,
        time_column="statechangetime",
        default_hours=12,
        unwindowed_by=JOB_UNWINDOWED,
        now=NOW,
    )


def test_default_window_is_twelve_hours_and_hours_days_override_it() -> None:
    assert compile_jobs({}).since == NOW - timedelta(hours=12)
    assert compile_jobs({"hours": "3"}).since == NOW - timedelta(hours=3)
    assert compile_jobs({"days": "7"}).since == NOW - timedelta(days=7)


def test_date_from_and_date_to_are_utc_and_must_be_ordered() -> None:
    sel = compile_jobs({"date_from": "2026-11-20T06:00", "date_to": "2026-11-21"})
    assert sel.since == datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    assert sel.until == datetime(2026, 11, 21, tzinfo=UTC)
    with pytest.raises(FilterError, match="date_to must be after date_from"):
        compile_jobs({"date_from": "2026-11-21", "date_to": "2026-11-20"})
    with pytest.raises(FilterError, match="date_from"):
        parse_time("date_from", "yesterday")


def test_window_rejects_zero_negative_and_non_numeric_hours() -> None:
    for bad in ("0", "-3", "twelve", "1e9"):
        with pytest.raises(FilterError, match="hours"):
            window({"hours": bad}, default_hours=12, now=NOW)


def test_unknown_filters_are_reported_not_applied() -> None:
    sel = compile_jobs({"jobstatus": "failed", "colour": "blue", "drop table": "x"})
    assert sel.unknown == ["colour", "drop table"]
    assert sel.applied == {"jobstatus": "failed"}


def test_bad_values_of_known_filters_name_the_parameter() -> None:
    with pytest.raises(FilterError, match="attemptnr: 'two' is not an integer"):
        compile_jobs({"attemptnr": "two"})
    with pytest.raises(FilterError, match="jobstatus: 'exploded' is not one of"):
        compile_jobs({"jobstatus": "exploded"})
    with pytest.raises(FilterError, match="empty value"):
        compile_jobs({"label": "|"})
    with pytest.raises(FilterError, match="needs a value"):
        compile_jobs({"label": "!"})


def test_an_id_filter_drops_the_default_window_as_panda_does() -> None:
    assert compile_jobs({"jeditaskid": "5"}).since is None
    assert compile_jobs({"jeditaskid": "5", "hours": "2"}).since == NOW - timedelta(hours=2)


@pytest.mark.django_db
def test_or_not_glob_range_and_not_specified_select_the_right_jobs() -> None:
    a = JobFactory(name="visit_1_isr", label="isr", attemptnr=1, jobstatus="failed")
    b = JobFactory(name="visit_2_isr", label="isr", attemptnr=3, jobstatus="finished")
    c = JobFactory(name="coadd_all", label="coadd", attemptnr=2, jobstatus="running")
    d = JobFactory(name="odd", label="", attemptnr=1, jobstatus="finished")

    def select(params: dict[str, str]) -> set[int]:
        sel = compile_selection(params, JOB_FIELDS, time_column=None, default_hours=None)
        return set(Job.objects.filter(sel.q).values_list("pandaid", flat=True))

    assert select({"jobstatus": "failed|running"}) == {a.pk, c.pk}
    assert select({"jobstatus": "!finished"}) == {a.pk, c.pk}
    assert select({"jobname": "visit_*"}) == {a.pk, b.pk}
    assert select({"jobname": "*_isr"}) == {a.pk, b.pk}
    assert select({"jobname": "*sit_2*"}) == {b.pk}
    assert select({"jobname": "v*_1_*r"}) == {a.pk}
    assert select({"attemptnr": "2:"}) == {b.pk, c.pk}
    assert select({"attemptnr": ":2"}) == {a.pk, c.pk, d.pk}
    assert select({"attemptnr": "2:2"}) == {c.pk}
    assert select({"label": "Not specified"}) == {d.pk}
    assert select({"label": "*"}) == {a.pk, b.pk, c.pk}
    assert select({"label": "isr|coadd", "jobstatus": "!failed"}) == {b.pk, c.pk}


@pytest.mark.django_db
def test_injection_attempts_in_filters_are_inert_values() -> None:
    job = JobFactory(name="plain")
    before = Job.objects.count()
    for payload in ("' OR 1=1 --", "x'); DROP TABLE dispatcher_job; --", "*' OR '1'='1*", "%", "_", "\\"):
        sel = compile_selection({"jobname": payload}, JOB_FIELDS, time_column=None, default_hours=None)
        assert list(Job.objects.filter(sel.q)) == []
    assert Job.objects.count() == before
    assert Job.objects.filter(pk=job.pk).exists()
