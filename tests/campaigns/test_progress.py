"""Honest progress (campaigns/progress.py): a group is stalled when no job changed state or
heartbeated with CPU progress for longer than its running labels' expected runtime, not when no
job finished; its ETA stands still while jobs run at a steady rate. Time is a clock the test
moves (django.utils.timezone.now), heartbeats go through the dispatcher's heartbeat service."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import ActionLog, Campaign, Group, GroupAttempt
from campaigns.progress import human_s
from campaigns.services import campaign_create, campaign_launch
from core.services import token_create
from dispatcher.models import Job
from dispatcher.services import job_attempt_end, job_transition
from dispatcher.services.pilot_calls.heartbeat import jobs_heartbeat
from dispatcher.services.pilot_calls.messages import PilotUpdate
from tests.campaigns.conftest import spec_text
from tests.factories import JobAttemptFactory

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.t = timezone.now()

    def __call__(self) -> dt.datetime:
        return self.t

    def tick(self, seconds: float) -> dt.datetime:
        self.t += dt.timedelta(seconds=seconds)
        return self.t


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(timezone, "now", c)
    return c


def _history(label: str, walltimes_s: list[float]) -> None:
    for w in walltimes_s:
        JobAttemptFactory(job__task__label=label, jobstatus="finished", walltime_s=w)


def _launched(operator, **kw) -> Campaign:
    campaign = campaign_create(owner=operator, spec_yaml=spec_text(**kw))
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    return campaign


def _group(campaign: Campaign, name: str) -> Group:
    return Group.objects.get(campaign=campaign, step__position=0, name=name)


def _jobs(group: Group, label: str) -> list[Job]:
    workflow_id = GroupAttempt.objects.get(group=group, attempt=group.attempt).workflow_id
    return list(Job.objects.filter(workflow_id=workflow_id, label=label).order_by("pandaid"))


def _start(job: Job, queue: str) -> None:
    job_transition(pandaid=job.pandaid, to="activated", cause="test brokerage", fields={"queue_id": queue})
    job_transition(
        pandaid=job.pandaid,
        to="sent",
        cause="test getJob",
        fields={"dispatched_at": timezone.now(), "lease": f"lease{job.pandaid}"},
    )
    job_transition(
        pandaid=job.pandaid, to="running", cause="test pilot", fields={"starttime": timezone.now()}
    )


def _heartbeat(job: Job, cpu_s: float) -> None:
    job.refresh_from_db()
    reply = jobs_heartbeat(
        [
            PilotUpdate(
                pandaid=job.pandaid,
                status="running",
                attemptnr=job.attemptnr,
                lease=job.lease,
                metrics={"cpu_time_s": cpu_s},
            )
        ],
        None,
    )
    assert reply[0] is not None, "the heartbeat was not applied"


def _finish(job: Job) -> None:
    job_attempt_end(
        pandaid=job.pandaid,
        attemptnr=job.attemptnr,
        status="finished",
        cause="test pilot",
        errors={},
        metrics={},
    )


def test_a_job_running_for_ten_minutes_with_heartbeats_is_not_stalled(operator, queue, clock):
    _history("isr", [300.0] * 5)  # isr is expected to take ≤ 5 min; the floor (stall_after_s) is 10 min
    campaign = _launched(operator)
    group = _group(campaign, "1-3")
    job = _jobs(group, "isr")[0]
    _start(job, queue.name)
    for minute in range(1, 16):  # 15 minutes, well past isr's expected runtime and the floor
        clock.tick(60)
        _heartbeat(job, cpu_s=55.0 * minute)
        campaigns_advance_one_round(now=clock.t)
        group.refresh_from_db()
        assert not group.stalled, (minute, group.stall_basis)
    assert group.jobs_done == 0  # no job finished in 15 minutes: "no job finished since" would flag it
    assert group.activity_at == clock.t
    assert group.stall_basis.startswith("last progress 0 s ago; stalled after 10 min")
    assert not ActionLog.objects.filter(verb="stall", object_id=group.pk).exists()


def test_a_job_whose_pilot_stops_heartbeating_is_stalled_once_its_labels_expected_runtime_passed(
    operator, queue, clock, webhook, django_capture_on_commit_callbacks
):
    url, received = webhook
    _history("isr", [600.0, 700.0, 800.0, 900.0, 1200.0])  # p95: 20 min, above the 10 min floor
    campaign = _launched(operator, webhook=url)
    group = _group(campaign, "1-3")
    job = _jobs(group, "isr")[0]
    _start(job, queue.name)
    for minute in range(1, 4):
        clock.tick(60)
        _heartbeat(job, cpu_s=55.0 * minute)
        campaigns_advance_one_round(now=clock.t)
    silent_from = clock.t
    for _ in range(19):  # 19 minutes without a heartbeat: past the floor, within isr's 20 min
        clock.tick(60)
        campaigns_advance_one_round(now=clock.t)
    group.refresh_from_db()
    assert not group.stalled, group.stall_basis
    assert group.activity_at == silent_from
    assert "stalled after 20 min: isr expected ≤ 20 min (p95 of 5 finished)" in group.stall_basis
    for _ in range(2):
        clock.tick(60)
        with django_capture_on_commit_callbacks(execute=True):
            campaigns_advance_one_round(now=clock.t)
    group.refresh_from_db()
    assert group.stalled
    assert group.stall_basis == (
        "no state change or CPU progress for 21 min; isr expected ≤ 20 min (p95 of 5 finished)"
    )
    stalls = [r for r in received if r["event"] == "stall" and r["group"] == "1-3"]
    assert len(stalls) == 1 and stalls[0]["since"] == silent_from.isoformat()
    assert ActionLog.objects.filter(verb="stall", object_type="group", object_id=group.pk).count() == 1
    _shown_with_basis(campaign, group)
    # The pilot comes back with CPU progress: the group is no longer stalled.
    clock.tick(60)
    _heartbeat(job, cpu_s=400.0)
    campaigns_advance_one_round(now=clock.t)
    group.refresh_from_db()
    assert not group.stalled and group.activity_at == clock.t


def test_heartbeats_without_cpu_progress_are_no_progress_signal(operator, queue, clock):
    _history("isr", [300.0] * 5)
    campaign = _launched(operator)
    group = _group(campaign, "1-3")
    job = _jobs(group, "isr")[0]
    _start(job, queue.name)
    clock.tick(60)
    _heartbeat(job, cpu_s=50.0)
    campaigns_advance_one_round(now=clock.t)
    last_progress = clock.t
    for _ in range(11):  # a hung payload: the pilot heartbeats, the CPU time stands still
        clock.tick(60)
        _heartbeat(job, cpu_s=50.0)
        campaigns_advance_one_round(now=clock.t)
    group.refresh_from_db()
    assert group.stalled and group.activity_at == last_progress
    assert group.stall_basis.startswith("no state change or CPU progress for 11 min; stall_after_s 10 min")


def test_the_eta_stands_still_while_jobs_run_at_a_steady_rate(operator, queue, clock):
    """Three jobs at a time, 300 s each (the labels' median), one finishing and one starting every
    100 s: the ETA computed every round stays where it was."""
    _history("isr", [300.0] * 5)
    _history("calibrate", [300.0] * 5)
    campaign = _launched(operator, n=12, size=12)
    group = _group(campaign, "1-12")
    assert group.jobs_total == 24

    def next_ready() -> Job:
        workflow_id = GroupAttempt.objects.get(group=group, attempt=group.attempt).workflow_id
        return Job.objects.filter(workflow_id=workflow_id, jobstatus="defined", pending_parents=0).order_by(
            "pandaid"
        )[0]

    running: list[Job] = []
    for _ in range(3):
        job = next_ready()
        _start(job, queue.name)
        running.append(job)
        clock.tick(100)
    first_round = clock.t
    etas: list[dt.datetime] = []
    for _ in range(15):  # 15 jobs finish; 3 keep running throughout
        _finish(running.pop(0))
        job = next_ready()
        _start(job, queue.name)
        running.append(job)
        campaigns_advance_one_round(now=clock.t)
        group.refresh_from_db()
        assert group.eta is not None
        etas.append(group.eta)
        clock.tick(100)
    # At the first round: 1 finished, 3 running with 100, 200 and 300 s to go, 20 queued × 300 s;
    # over 3 running: 2200 s.
    assert etas[0] == first_round + dt.timedelta(seconds=2200)
    assert max(abs((e - etas[0]).total_seconds()) for e in etas) <= 60, [
        human_s((e - etas[0]).total_seconds()) for e in etas
    ]
    # The last round: every isr job has finished, 3 calibrate jobs of this group among the history.
    assert group.eta_basis == "ETA from calibrate: 8 finished, median 5 min; 3 running"


def _shown_with_basis(campaign: Campaign, group: Group) -> None:
    """The group page, the campaign page (and its JSON), the workflow page and the API (what
    `ailuro campaign show` prints) show the stall and the ETA with their basis."""
    pages = Client()
    assert html.escape(group.stall_basis) in pages.get(f"/campaign/group/{group.pk}/").content.decode()
    page = pages.get(f"/campaign/{campaign.pk}/").content.decode()
    assert f'title="{html.escape(group.stall_basis)}"' in page
    assert (
        "ETA from calibrate: no history, requested 60 min; isr: 5 finished, median 13 min"
        in html.unescape(page)
    )
    progress = pages.get(f"/campaign/{campaign.pk}/?json").json()["progress"]
    assert "1-3" in progress["stalled"] and progress["eta_basis"].startswith("group ")
    workflow_id = GroupAttempt.objects.get(group=group, attempt=group.attempt).workflow_id
    workflow_page = pages.get(f"/workflow/{workflow_id}/").content.decode()
    assert html.escape(group.stall_basis) in workflow_page and html.escape(group.eta_basis) in workflow_page
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='operator', role='user')}")
    shown = api.get(f"/api/v1/campaign-groups/{group.pk}/").json()
    assert (shown["stalled"], shown["stall_basis"]) == (True, group.stall_basis)
    assert shown["eta_basis"] == group.eta_basis and shown["eta_basis"].startswith("ETA from ")
