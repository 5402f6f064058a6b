"""Retries that resize the request: memory from the failed attempt's measured peak RSS, walltime up
to the longest a queue allows; the decision and its numbers on the attempt, the status log and the
job page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, JobStatusLog, Queue, RetryRule
from dispatcher.retry import ResizePolicy, RetryDecision, Rule, retry_decide
from dispatcher.services import job_attempt_end
from dispatcher.states import JobStatus
from tests.factories import JobFactory, QueueFactory, TaskFactory

OOM = Rule(name="oom", error_family="pilot", code=1212, action="increase_memory", params={"factor": 2})
WALLTIME = Rule(name="walltime", error_family="pilot", code=1213, action="increase_walltime")
POLICY = ResizePolicy(margin=1.25, round_mb=100, step_mb=100)


def _oom(memory_mb: int, measured_rss_kb: int | None, *, cap: int = 16000, **kw: object) -> RetryDecision:
    return retry_decide(
        errors={"piloterrorcode": 1212},
        rules=[OOM],
        label="isr",
        attemptnr=1,
        max_attempts=3,
        memory_mb=memory_mb,
        max_memory_mb=cap,
        measured_rss_kb=measured_rss_kb,
        policy=kw.pop("policy", POLICY),  # type: ignore[arg-type]
    )


def test_the_request_is_the_measured_peak_times_the_margin_rounded_up() -> None:
    d = _oom(400, 420 * 1024)
    assert (d.action, d.memory_mb) == ("increase_memory", 600)
    assert d.reason == (
        "rule oom: retry asks 600 MB = measured 420 MB × 1.25, rounded up to a multiple of 100 MB; was 400 MB"
    )
    assert _oom(400, 420 * 1024, policy=ResizePolicy(margin=1.25, round_mb=25, step_mb=100)).memory_mb == 525
    # A peak of 420 MB and 1 kB counts as 421 MB: 526.25 → 550 in steps of 25.
    assert _oom(400, 420 * 1024 + 1, policy=ResizePolicy(round_mb=25, step_mb=100)).memory_mb == 550


def test_a_measurement_far_above_the_request_is_not_doubling() -> None:
    d = _oom(2000, 6000 * 1024)
    assert d.memory_mb == 7500  # 6000 × 1.25, where doubling would have asked 4000 and failed again


def test_the_request_grows_at_least_by_the_step() -> None:
    d = _oom(4000, 1000 * 1024)
    assert d.memory_mb == 4100
    assert "previous 4000 MB + 100 MB (measured 1000 MB × 1.25 is less)" in d.reason


def test_the_request_is_capped_and_at_the_cap_there_is_no_retry() -> None:
    d = _oom(12000, 14000 * 1024)
    assert d.memory_mb == 16000
    assert "the task's cap of 16000 MB (measured 14000 MB × 1.25" in d.reason
    at_cap = _oom(16000, 15900 * 1024)
    assert (at_cap.action, at_cap.memory_mb) == ("no_retry", None)
    assert "at the cap of 16000 MB" in at_cap.reason


def test_without_a_measurement_the_rule_factor_applies() -> None:
    for measured in (None, 0):
        d = _oom(3000, measured)
        assert d.memory_mb == 6000
        assert (
            d.reason == "rule oom: retry asks 6000 MB = previous 3000 MB × 2 (no measured peak); was 3000 MB"
        )


def _walltime(walltime_s: int, longest_s: int) -> RetryDecision:
    return retry_decide(
        errors={"piloterrorcode": 1213},
        rules=[WALLTIME],
        label="isr",
        attemptnr=1,
        max_attempts=3,
        memory_mb=2000,
        max_memory_mb=4000,
        walltime_s=walltime_s,
        max_walltime_s=longest_s,
    )


def test_walltime_doubles_up_to_the_longest_a_queue_allows() -> None:
    d = _walltime(3600, 86400)
    assert (d.action, d.walltime_s, d.memory_mb) == ("increase_walltime", 7200, None)
    assert d.reason == "rule walltime: retry asks 7200 s of walltime = 3600 s × 2"
    d = _walltime(50000, 86400)
    assert d.walltime_s == 86400 and "the longest a queue allows (50000 s × 2 = 100000 s)" in d.reason
    d = _walltime(86400, 86400)
    assert (d.action, d.walltime_s) == ("no_retry", None)
    assert "already the longest a queue allows (86400 s)" in d.reason


# --- applied by the end of an attempt, shown on the job page -----------------------------------------


def _running(**kw: object) -> Job:
    return JobFactory(
        jobstatus=JobStatus.RUNNING, queue=QueueFactory(max_rss_mb=64000), starttime=timezone.now(), **kw
    )


@pytest.mark.django_db
def test_an_out_of_memory_attempt_comes_back_asking_its_measured_peak(client: Client) -> None:
    """Default policy: margin 1.25, multiples of 100 MB, at least the previous request + 500 MB."""
    job = _running(task=TaskFactory(max_memory_mb=32000), request_memory_mb=2000)
    Job.objects.filter(pk=job.pk).update(max_rss_kb=1_000_000, cpu_time_s=50.0)  # a heartbeat's value

    out = job_attempt_end(
        pandaid=job.pandaid,
        attemptnr=1,
        status="failed",
        cause="pilot reported failed",
        errors={"piloterrorcode": 1212, "piloterrordiag": "payload exceeded its memory limit"},
        metrics={"max_rss_kb": 3_000_000, "max_pss_kb": 2_500_000},
    )

    # 3,000,000 kB = 2930 MB (rounded up) × 1.25 = 3662.5 → 3700 MB; doubling would ask 4000 MB.
    reason = (
        "rule oom-pilot: retry asks 3700 MB = measured 2930 MB × 1.25, rounded up to a multiple of 100 MB"
    )
    assert out is not None and out.decision is not None and out.decision.memory_mb == 3700
    job.refresh_from_db()
    assert (job.jobstatus, job.attemptnr, job.request_memory_mb) == ("defined", 2, 3700)
    # The row describes the next attempt: the failed one's measurements stay on its JobAttempt.
    assert (job.max_rss_kb, job.max_pss_kb, job.cpu_time_s) == (None, None, None)
    attempt = JobAttempt.objects.get(job=job)
    assert (attempt.max_rss_kb, attempt.request_memory_mb, attempt.retry_action) == (
        3_000_000,
        2000,
        "increase_memory",
    )
    assert attempt.retry_reason.startswith(reason)
    assert JobStatusLog.objects.filter(job=job, jobstatus="defined", cause__contains=reason).exists()
    page = client.get(f"/job/{job.pandaid}/")
    assert page.status_code == 200
    assert reason in page.content.decode()


@pytest.mark.django_db
def test_a_second_out_of_memory_without_measurement_does_not_reuse_the_first_peak() -> None:
    job = _running(task=TaskFactory(max_memory_mb=32000), request_memory_mb=2000)
    errors = {"piloterrorcode": 1212}
    job_attempt_end(
        pandaid=job.pandaid,
        attemptnr=1,
        status="failed",
        cause="p",
        errors=errors,
        metrics={"max_rss_kb": 4_096_000},
    )
    Job.objects.filter(pk=job.pk).update(jobstatus=JobStatus.RUNNING, queue=QueueFactory())
    job_attempt_end(pandaid=job.pandaid, attemptnr=2, status="failed", cause="p", errors=errors)

    attempts = list(JobAttempt.objects.filter(job=job).order_by("attemptnr"))
    assert [a.request_memory_mb for a in attempts] == [2000, 5000]
    assert "no measured peak" in attempts[1].retry_reason
    assert Job.objects.get(pk=job.pk).request_memory_mb == 10000


@pytest.mark.django_db
def test_a_walltime_overrun_comes_back_with_twice_the_walltime_within_the_queues() -> None:
    job = _running(request_walltime_s=3600)
    Queue.objects.update(status="offline")
    QueueFactory(max_walltime_s=5000)
    QueueFactory(max_walltime_s=200_000, status="brokeroff")  # takes no new jobs: not a bound

    out = job_attempt_end(
        pandaid=job.pandaid,
        attemptnr=1,
        status="failed",
        cause="pilot reported failed",
        errors={"piloterrorcode": 1213, "piloterrordiag": "payload exceeded its walltime of 3600 s"},
    )

    assert out is not None and out.decision is not None
    assert out.decision.reason.startswith("rule walltime-exceeded: retry asks 5000 s of walltime")
    job.refresh_from_db()
    assert (job.jobstatus, job.request_walltime_s, job.queue_id) == ("defined", 5000, None)
    assert RetryRule.objects.get(name="walltime-exceeded").action == "increase_walltime"
