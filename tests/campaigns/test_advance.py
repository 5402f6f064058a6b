"""campaigns.advance: the advancer submits groups, judges attempts, moves steps, notifies."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import ActionLog, Campaign, Group, GroupAttempt, Step
from campaigns.services import campaign_create, campaign_launch, campaign_pause, step_release
from config.loops import loop_named
from core.leases import lease_acquire
from dispatcher.models import Job
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import BAD, OK, OOM, pilots_run

pytestmark = pytest.mark.django_db


def _launched(operator, **kw) -> Campaign:
    campaign = campaign_create(owner=operator, spec_yaml=spec_text(**kw))
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    return campaign


def _workflows(campaign):
    return list(GroupAttempt.objects.filter(group__campaign=campaign).values_list("workflow_id", flat=True))


def test_a_clean_campaign_runs_step_by_step_to_done_and_notifies_completion(
    operator, queue, webhook, django_capture_on_commit_callbacks
):
    url, received = webhook
    campaign = _launched(operator, webhook=url)
    with django_capture_on_commit_callbacks(execute=True):
        assert campaigns_advance_one_round() == 3  # step1 starts, two groups submitted
    step1, step2 = Step.objects.filter(campaign=campaign).order_by("position")
    assert [g.status for g in step1.groups.all()] == ["running", "running"]
    assert Job.objects.filter(workflow_id__in=_workflows(campaign)).count() == 12
    assert pilots_run(queue=queue.name, workflow_ids=_workflows(campaign)) == 12
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    step1.refresh_from_db()
    step2.refresh_from_db()
    assert (step1.status, step2.status) == ("done", "running")
    assert sorted(Group.objects.filter(step=step1).values_list("status", "jobs_done")) == [
        ("accepted", 6),
        ("accepted", 6),
    ]
    # step2 runs one coadd job per group
    assert pilots_run(queue=queue.name, workflow_ids=_workflows(campaign)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    campaign.refresh_from_db()
    assert campaign.status == "done"
    assert [r["event"] for r in received] == ["completion"]
    assert received[0]["campaign"] == "c1"


def test_a_throttled_step_keeps_at_most_its_limit_of_groups_running(operator, queue):
    campaign = _launched(operator, n=9, size=3, throttle=1)
    campaigns_advance_one_round()
    assert list(
        Group.objects.filter(campaign=campaign, step__position=0).values_list("status", flat=True)
    ) == [
        "running",
        "waiting",
        "waiting",
    ]
    pilots_run(queue=queue.name, workflow_ids=_workflows(campaign))
    campaigns_advance_one_round()
    assert list(
        Group.objects.filter(campaign=campaign, step__position=0).values_list("status", flat=True)
    ) == [
        "accepted",
        "running",
        "waiting",
    ]


def test_failed_jobs_fail_the_group_once_and_notify_failure(
    operator, queue, webhook, django_capture_on_commit_callbacks
):
    url, received = webhook
    campaign = _launched(operator, webhook=url)
    campaigns_advance_one_round()
    outcomes = {"isr_2": OOM, "calibrate_5": BAD}
    pilots_run(
        queue=queue.name, workflow_ids=_workflows(campaign), outcome=lambda j: outcomes.get(j.name, OK)
    )
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    groups = Group.objects.filter(campaign=campaign, step__position=0).order_by("position")
    assert [(g.name, g.status) for g in groups] == [("1-3", "failed"), ("4-6", "failed")]
    assert sorted((r["event"], r["group"], r["missing"]) for r in received) == [
        ("failure", "1-3", 2),  # isr_2 failed, calibrate_2 pruned
        ("failure", "4-6", 1),
    ]
    assert Step.objects.get(campaign=campaign, position=0).status == "running"


def test_a_group_without_progress_is_flagged_stalled_and_notified_once(
    operator, queue, webhook, django_capture_on_commit_callbacks
):
    url, received = webhook
    campaign = _launched(operator, webhook=url)
    campaigns_advance_one_round()
    later = timezone.now() + dt.timedelta(seconds=601)
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round(now=later)
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round(now=later + dt.timedelta(seconds=60))
    assert list(Group.objects.filter(campaign=campaign, stalled=True).values_list("name", flat=True)) == [
        "1-3",
        "4-6",
    ]
    assert sorted(r["group"] for r in received if r["event"] == "stall") == ["1-3", "4-6"]
    assert ActionLog.objects.filter(campaign=campaign, verb="stall").count() == 2


def test_progress_and_eta_follow_the_job_counts(operator, queue):
    campaign = _launched(operator)
    campaigns_advance_one_round()
    first = Group.objects.get(campaign=campaign, step__position=0, name="1-3")
    assert (first.jobs_total, first.jobs_done) == (6, 0)
    campaigns_advance_one_round()
    first.refresh_from_db()
    # Six jobs in flight, no history: isr's requested 600 s × 3 + calibrate's 3600 s × 3, serially.
    assert abs((first.eta - timezone.now()).total_seconds() - 12600) < 60
    pilots_run(queue=queue.name, workflow_ids=_workflows(campaign), labels={"isr"}, runtime_s=100)
    later = timezone.now() + dt.timedelta(seconds=5)
    campaigns_advance_one_round(now=later)
    first.refresh_from_db()
    assert (first.status, first.jobs_done, first.progress_at) == ("running", 3, later)
    # Three calibrate jobs left at their requested 3600 s (no calibrate history yet).
    assert (first.eta - later).total_seconds() == 10800
    pilots_run(queue=queue.name, workflow_ids=_workflows(campaign))
    campaigns_advance_one_round()
    first.refresh_from_db()
    assert (first.status, first.jobs_done) == ("accepted", 6)


def test_a_breakpoint_step_waits_for_release(operator, queue):
    text = spec_text().replace("  - name: step2\n", "  - name: step2\n    breakpoint: true\n")
    campaign = campaign_create(owner=operator, spec_yaml=text)
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    pilots_run(queue=queue.name, workflow_ids=_workflows(campaign))
    campaigns_advance_one_round()
    step2 = Step.objects.get(campaign=campaign, name="step2")
    assert step2.status == "blocked"
    assert not Group.objects.filter(step=step2).exclude(status="waiting").exists()
    step_release(step_id=step2.pk, actor="operator")
    campaigns_advance_one_round()
    assert set(Group.objects.filter(step=step2).values_list("status", flat=True)) == {"running"}


def test_a_paused_campaign_is_left_alone(operator, queue):
    campaign = _launched(operator)
    campaign_pause(campaign_id=campaign.pk, actor="operator")
    assert campaigns_advance_one_round() == 0
    assert not GroupAttempt.objects.filter(group__campaign=campaign).exists()


def test_the_campaigns_loop_does_nothing_while_another_holder_has_its_lease(operator, queue):
    campaign = _launched(operator)
    assert lease_acquire(name="loop:campaigns", holder="someone-else", ttl_s=60)
    assert loop_named("campaigns").run() is None
    assert not GroupAttempt.objects.filter(group__campaign=campaign).exists()
