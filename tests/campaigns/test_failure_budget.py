"""A campaign passes its failure budget and learned requests to its workflows' labels, and tells
its webhook (a real HTTP receiver on 127.0.0.1) once when the budget pauses one of its tasks."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import ActionLog, GroupAttempt
from campaigns.services import campaign_create, campaign_launch
from campaigns.spec import SpecInvalid, spec_parse
from dispatcher.models import Job, Task
from dispatcher.services import job_transition, workflow_resume
from dispatcher.services.attempts import job_attempt_end
from dispatcher.services.budgets import failure_budgets_check
from tests.campaigns.pilots import BAD

pytestmark = pytest.mark.django_db

SPEC = """
name: budgeted
dimension: visit
failure_budget: {{fraction: 0.9, min_attempts: 50}}
learn_requests: {{min_samples: 5}}
pipeline:
  isr: {{command: "run isr {{data_id}}", failure_budget: {{core_hours: 1.5}}}}
  calibrate: {{command: "run calibrate {{data_id}}", parents: [isr], learn_requests: false}}
data:
  ranges: [[1, 4]]
steps:
  - name: step1
    labels: [isr, calibrate]
    split: {{rule: query, max_group_size: 4}}
notifications: {{webhook: "{webhook}", events: [failure, budget]}}
"""


def _fail(job: Job, queue: str, runtime_s: float) -> None:
    """One failed attempt, as a pilot reports it: dispatched, running `runtime_s`, failed."""
    start = timezone.now() - dt.timedelta(seconds=runtime_s)
    job_transition(pandaid=job.pandaid, to="activated", cause="test brokerage", fields={"queue_id": queue})
    job_transition(pandaid=job.pandaid, to="sent", cause="test getJob", fields={"dispatched_at": start})
    job_transition(pandaid=job.pandaid, to="running", cause="test pilot", fields={"starttime": start})
    _, errors = BAD
    job_attempt_end(
        pandaid=job.pandaid, attemptnr=job.attemptnr, status="failed", cause="test pilot", errors=errors
    )


def test_the_labels_take_the_campaigns_settings_and_their_own() -> None:
    spec = spec_parse(SPEC.format(webhook="http://127.0.0.1:9/hook"))
    assert spec["pipeline"]["isr"]["failure_budget"] == {"core_hours": 1.5}
    assert spec["pipeline"]["calibrate"]["failure_budget"] == {"fraction": 0.9, "min_attempts": 50}
    assert spec["pipeline"]["isr"]["learn_requests"] == {"percentile": 95, "margin": 1.2, "min_samples": 5}
    assert "learn_requests" not in spec["pipeline"]["calibrate"]
    with pytest.raises(SpecInvalid, match=r"pipeline.isr.failure_budget.core_hours must be a number"):
        spec_parse(SPEC.format(webhook="").replace("core_hours: 1.5", "core_hours: many"))


def test_a_budget_pause_is_told_to_the_webhook_once(
    operator, queue, webhook, django_capture_on_commit_callbacks
) -> None:
    url, received = webhook
    campaign = campaign_create(owner=operator, spec_yaml=SPEC.format(webhook=url))
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    workflow_id = GroupAttempt.objects.get(group__campaign=campaign).workflow_id
    isr = Task.objects.get(workflow_id=workflow_id, label="isr")
    assert isr.failure_budget == {"core_hours": 1.5}
    assert isr.learn_requests == {"percentile": 95, "margin": 1.2, "min_samples": 5}
    calibrate = Task.objects.get(workflow_id=workflow_id, label="calibrate")
    assert (calibrate.failure_budget, calibrate.learn_requests) == (
        {"fraction": 0.9, "min_attempts": 50},
        None,
    )

    # Two isr attempts of an hour on one core: 2 core-hours of failures, over 1.5.
    for job in Job.objects.filter(task=isr).order_by("pandaid")[:2]:
        _fail(job, queue.name, runtime_s=3600)
    assert failure_budgets_check() == 1
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()  # told once
    reason = "failure budget exceeded: 2 failed attempts used 2.000 core-hours (budget 1.5 core-hours)"
    assert [(r["event"], r["jeditaskid"], r["label"], r["reason"]) for r in received] == [
        ("budget", isr.pk, "isr", reason)
    ]
    assert received[0]["campaign"] == "budgeted" and received[0]["workflow_id"] == workflow_id
    log = ActionLog.objects.get(campaign=campaign, verb="budget_pause")
    assert (log.object_type, log.params["jeditaskid"], log.message) == (
        "group",
        isr.pk,
        f"task {isr.pk} (isr) paused: {reason}",
    )

    # The campaign page counts the wasted core-hours, in total and for the group.
    page = Client().get(f"/campaign/{campaign.pk}/?json").json()
    assert page["wasted_core_seconds"] == 2 * 3600
    assert [g["wasted_core_seconds"] for s in page["steps"] for g in s["groups"]] == [2 * 3600]
    assert (
        'id="campaign-wasted"><span class="num">2.00</span>'
        in Client().get(f"/campaign/{campaign.pk}/").content.decode()
    )

    # Resumed and paused again: a new pause, told again.
    workflow_resume(workflow_id=workflow_id, actor="operator", labels=["isr"])
    for job in Job.objects.filter(task=isr, jobstatus="defined", pending_parents=0).order_by("pandaid")[:2]:
        _fail(job, queue.name, runtime_s=3600)
    assert failure_budgets_check() == 1
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    # (BAD is not retried: the four isr jobs failed for good, so the group failed too.)
    assert [r["event"] for r in received] == ["budget", "budget", "failure"]
    assert ActionLog.objects.filter(campaign=campaign, verb="budget_pause").count() == 2
