"""campaigns.services recovery verbs: restart, rescue (selective rerun), retry, accept, reject."""

from __future__ import annotations

import pytest

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import ActionLog, Campaign, Group, GroupAttempt, Step
from campaigns.services import (
    ActionRefused,
    campaign_create,
    campaign_launch,
    group_accept,
    group_pause,
    group_reject,
    group_rescue,
    group_restart,
    group_resume,
    group_retry,
)
from campaigns.spec import SpecInvalid
from dispatcher.models import Job, JobAttempt, RetryRule, Task, Workflow
from dispatcher.services import broker_one_batch, job_attempt_end, job_transition
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import BAD, OK, OOM, pilots_run
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db


def _wfs(campaign):
    return list(GroupAttempt.objects.filter(group__campaign=campaign).values_list("workflow_id", flat=True))


@pytest.fixture
def failed(operator, queue):
    """Step 1 of c1 after one attempt: group 1-3 has an OOM in isr_2 (calibrate_2 pruned) and a
    deterministic failure in calibrate_3; group 4-6 succeeded."""
    # Manual recovery only: the default retry rules (dispatcher migration 0002) would retry the OOM
    # by themselves, with more memory.
    RetryRule.objects.update(active=False)
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    outcomes = {"isr_2": OOM, "calibrate_3": BAD}
    pilots_run(queue=queue.name, workflow_ids=_wfs(campaign), outcome=lambda j: outcomes.get(j.name, OK))
    campaigns_advance_one_round()
    group = Group.objects.get(campaign=campaign, step__position=0, name="1-3")
    assert group.status == "failed"
    return campaign, group


def _current_jobs(group):
    group.refresh_from_db()
    wf = GroupAttempt.objects.get(group=group, attempt=group.attempt).workflow_id
    return {j.name: j for j in Job.objects.filter(workflow_id=wf)}


def test_restart_reruns_failed_and_pruned_jobs_in_place_with_a_new_attempt_number(failed, queue):
    campaign, group = failed
    preview = group_restart(group_id=group.pk, actor="operator", preview=True)
    assert preview.details["by_status"] == {"failed": 2, "pruned": 1}
    assert not ActionLog.objects.filter(verb="restart").exists()
    group_restart(group_id=group.pk, actor="operator")
    jobs = _current_jobs(group)
    assert {
        n: (j.jobstatus, j.attemptnr, j.pending_parents) for n, j in jobs.items() if n.endswith(("2", "3"))
    } == {
        "isr_2": ("defined", 2, 0),
        # Pruned without ever being dispatched: same attempt number, waits for isr_2 again.
        "calibrate_2": ("defined", 1, 1),
        "calibrate_3": ("defined", 2, 0),  # isr_3 finished
        "isr_3": ("finished", 1, 0),
    }
    assert jobs["isr_2"].exeerrorcode == 0
    assert JobAttempt.objects.get(job=jobs["isr_2"], attemptnr=1).exeerrorcode == 137
    assert (group.status, group.attempt) == ("running", 1)
    pilots_run(queue=queue.name, workflow_ids=_wfs(campaign))
    campaigns_advance_one_round()
    group.refresh_from_db()
    assert group.status == "accepted"
    assert GroupAttempt.objects.get(group=group).restarts == 1
    assert ActionLog.objects.filter(verb="restart", result="ok", object_id=group.pk).count() == 1


def test_rescue_with_an_error_selection_reruns_only_that_class_and_its_downstream(failed, queue):
    campaign, group = failed
    preview = group_rescue(
        group_id=group.pk,
        actor="operator",
        selection={"error": "exe:137"},
        overrides={"memory_mb": 4000},
        preview=True,
    )
    assert (preview.details["selected"], preview.details["downstream"], preview.details["left_failed"]) == (
        ["isr_2"],
        ["calibrate_2"],
        ["calibrate_3"],
    )
    assert preview.details["errors"] == {"exe:137 Killed: out of memory (rss <N> MB > <N> MB)": 1}
    group_rescue(
        group_id=group.pk, actor="operator", selection={"error": "exe:137"}, overrides={"memory_mb": 4000}
    )
    jobs = _current_jobs(group)
    assert {n: (j.request_memory_mb, j.pending_parents) for n, j in jobs.items()} == {
        "isr_2": (4000, 0),
        "calibrate_2": (2000, 1),
    }
    attempt = GroupAttempt.objects.get(group=group, attempt=2)
    assert (attempt.kind, attempt.config["jobs"], attempt.config["only"]) == (
        "rescue",
        {"isr_2": {"memory_mb": 4000}},
        ["calibrate_2", "isr_2"],
    )
    pilots_run(queue=queue.name, workflow_ids=_wfs(campaign))
    campaigns_advance_one_round()
    group.refresh_from_db()
    assert group.status == "failed"  # calibrate_3 was left out on purpose
    # A failure left out of attempt 2 can still be selected from attempt 1.
    later = group_rescue(group_id=group.pk, actor="operator", selection={"error": "exe:65"}, preview=True)
    assert (later.details["selected"], later.details["downstream"]) == (["calibrate_3"], [])
    assert group_accept(group_id=group.pk, actor="operator").details["missing"] == ["calibrate_3"]
    group.refresh_from_db()
    assert group.status == "accepted"


def test_rescue_without_selection_reruns_every_job_without_outputs(failed):
    campaign, group = failed
    outcome = group_rescue(group_id=group.pk, actor="operator", preview=True)
    assert outcome.details["rerun"] == ["calibrate_2", "calibrate_3", "isr_2"]


def test_selection_by_label_and_data_range(failed):
    _, group = failed
    by_label = group_rescue(
        group_id=group.pk, actor="operator", selection={"label": "calibrate"}, preview=True
    )
    assert by_label.details["selected"] == ["calibrate_3"]
    by_range = group_rescue(
        group_id=group.pk, actor="operator", selection={"data_min": 2, "data_max": 2}, preview=True
    )
    assert (by_range.details["selected"], by_range.details["downstream"]) == (["isr_2"], ["calibrate_2"])
    with pytest.raises(ActionRefused, match="nothing to rerun"):
        group_rescue(group_id=group.pk, actor="operator", selection={"site": "ELSEWHERE"})
    assert ActionLog.objects.filter(verb="rescue", result="refused").count() == 1


def test_retry_submits_a_fresh_attempt_of_every_job(failed):
    _, group = failed
    group_retry(group_id=group.pk, actor="operator")
    jobs = _current_jobs(group)
    assert len(jobs) == 6
    assert {j.jobstatus for j in jobs.values()} == {"defined"}
    assert list(GroupAttempt.objects.filter(group=group).values_list("attempt", "kind")) == [
        (1, "submit"),
        (2, "retry"),
    ]


def test_verbs_refuse_outside_their_preconditions_and_log_the_refusal(failed):
    campaign, group = failed
    other = Group.objects.get(campaign=campaign, step__position=0, name="4-6")
    assert other.status == "accepted"
    with pytest.raises(ActionRefused, match="restart needs one of failed"):
        group_restart(group_id=other.pk, actor="operator")
    with pytest.raises(ActionRefused, match="accept needs one of failed"):
        group_accept(group_id=other.pk, actor="operator")
    waiting = Group.objects.get(campaign=campaign, step__position=1, name="1-3")
    with pytest.raises(ActionRefused, match="never submitted|rescue needs"):
        group_rescue(group_id=waiting.pk, actor="operator")
    assert list(ActionLog.objects.filter(result="refused").values_list("verb", flat=True).order_by("id")) == [
        "restart",
        "accept",
        "rescue",
    ]


def test_a_rejected_group_fails_its_step_and_campaign_until_retried(failed, queue):
    campaign, group = failed
    group_reject(group_id=group.pk, actor="operator")
    campaigns_advance_one_round()
    campaign.refresh_from_db()
    step = Step.objects.get(campaign=campaign, position=0)
    assert (campaign.status, step.status) == ("failed", "failed")
    with pytest.raises(ActionRefused, match="can no longer be rejected"):
        group_reject(group_id=Group.objects.get(step=step, name="4-6").pk, actor="operator")
    with pytest.raises(ActionRefused, match="rescue it before the step ends"):
        group_rescue(group_id=Group.objects.get(step=step, name="4-6").pk, actor="operator")
    outcome = group_retry(group_id=group.pk, actor="operator")
    assert outcome.details["reopens_step"] is True
    campaign.refresh_from_db()
    assert campaign.status == "running"
    pilots_run(queue=queue.name, workflow_ids=_wfs(campaign))
    campaigns_advance_one_round()
    step.refresh_from_db()
    assert step.status == "done"


def test_pause_and_resume_of_a_group(failed):
    _, group = failed
    group_pause(group_id=group.pk, actor="operator")
    group.refresh_from_db()
    assert group.status == "paused"
    group_resume(group_id=group.pk, actor="operator")
    campaigns_advance_one_round()
    group.refresh_from_db()
    assert group.status == "failed"  # judged again from its attempt


def test_the_audit_log_records_who_did_what(failed):
    campaign, group = failed
    group_accept(group_id=group.pk, actor="alice")
    row = ActionLog.objects.filter(campaign=campaign).order_by("-id").first()
    assert (row.actor, row.verb, row.object_type, row.object_id, row.result) == (
        "alice",
        "accept",
        "group",
        group.pk,
        "ok",
    )
    assert Campaign.objects.get(pk=campaign.pk).status == "running"


def test_rescue_can_keep_the_rerun_away_from_the_queue_where_it_failed(failed, queue):
    campaign, group = failed
    other = QueueFactory(name="OTHER_QUEUE", max_rss_mb=64000)

    with pytest.raises(SpecInvalid, match=r"overrides.sites.exclude must be a list"):
        group_rescue(group_id=group.pk, actor="operator", overrides={"sites": {"exclude": queue.name}})
    group_rescue(group_id=group.pk, actor="operator", overrides={"sites": {"exclude": [queue.name]}})

    group.refresh_from_db()
    attempt = GroupAttempt.objects.get(group=group, attempt=group.attempt)
    excluded = Task.objects.filter(workflow_id=attempt.workflow_id).values_list("excluded_sites", flat=True)
    assert {tuple(rule) for rule in excluded} == {(queue.name,)}
    while broker_one_batch(limit=100):
        for job in Job.objects.filter(workflow_id=attempt.workflow_id, jobstatus="activated"):
            job_transition(pandaid=job.pandaid, to="sent", cause="test getJob")
            job_transition(pandaid=job.pandaid, to="running", cause="test pilot")
            job_attempt_end(pandaid=job.pandaid, attemptnr=job.attemptnr, status="finished", cause="test")
    queues = set(Job.objects.filter(workflow_id=attempt.workflow_id).values_list("queue_id", flat=True))
    assert queues == {other.name}


def test_pausing_a_running_group_holds_its_released_jobs_until_resume(operator, queue):
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    group = Group.objects.get(campaign=campaign, step__position=0, name="1-3")
    workflow_id = GroupAttempt.objects.get(group=group).workflow_id
    broker_one_batch(limit=1000)
    assert Job.objects.filter(workflow_id=workflow_id, jobstatus="activated").count() == 3  # isr_1..3

    outcome = group_pause(group_id=group.pk, actor="operator")

    assert outcome.details == {"held_jobs": 3}
    assert Workflow.objects.get(pk=workflow_id).status == "paused"
    assert not Job.objects.filter(workflow_id=workflow_id, jobstatus="activated").exists()
    assert broker_one_batch(limit=1000) == 0  # held: brokerage skips the paused tasks
    group_resume(group_id=group.pk, actor="operator")
    assert Workflow.objects.get(pk=workflow_id).status == "running"
    assert broker_one_batch(limit=1000) == 3
    assert Job.objects.filter(workflow_id=workflow_id, jobstatus="activated").count() == 3
