"""End to end: a 3-step campaign over 200 data ids on PostgreSQL, advanced by a
real Celery worker, with injected out-of-memory and deterministic failures; a rescue with a memory
override reruns only the out-of-memory class; accept and reject; final states, counts and the audit
log checked exactly.

Jobs go through the real dispatcher path: brokerage, then pilots speaking the v1 pilot protocol
(`acquire_jobs`, `update_job`) over Django's test client; the payloads themselves are simulated (the
outcome function). The advancer runs only in the worker, never in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count

from campaigns.models import ActionLog, Campaign, Group, GroupAttempt, Step
from campaigns.services import (
    ActionRefused,
    campaign_create,
    campaign_launch,
    group_accept,
    group_reject,
    group_rescue,
)
from config.celery import LOOP_TASKS
from dispatcher.models import Job, RetryRule
from tests.campaigns.pilots import BAD, OK, OOM, Outcome, ProtocolPilots

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

campaigns_advance = LOOP_TASKS["campaigns"]


@pytest.fixture(autouse=True)
def no_retry_rules() -> None:
    """The campaign recovers its failures itself here (rescue with more memory, accept, reject), so
    the dispatcher retries nothing: the rules migration 0002 seeds, or an earlier test left, go."""
    RetryRule.objects.all().delete()


ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: e2e
dimension: visit
pipeline:
  isr: {command: "run isr {data_id}", memory_mb: 2000, walltime_s: 600}
  calibrate: {command: "run calibrate {data_id}", parents: [isr], memory_mb: 2000}
  coadd: {command: "run coadd {group}", parents: [calibrate], per: group, memory_mb: 3000}
data:
  ranges: [[1, 200]]
steps:
  - name: isr
    labels: [isr]
    split: {rule: query, max_group_size: 50}
  - name: calibrate
    labels: [calibrate]
    split: {rule: query, max_group_size: 100, min_groups: 2}
  - name: coadd
    labels: [coadd]
    split: {rule: ranges, ranges: [[1, 100], [101, 200]]}
notifications: {webhook: "WEBHOOK", events: [failure, stall, completion]}
"""


@pytest.fixture
def worker() -> Iterator[str]:
    """A real Celery worker on this run's own queue, on the test database; stopped by pid."""
    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), (
        "the end-to-end test needs a Redis broker (scripts/test.sh sets one)"
    )
    queue = f"campaigns-e2e-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "AILURO_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield queue
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        # Rounds still queued for this run's private queue go with it.
        with campaigns_advance.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


def _advance_until(queue: str, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Ask the worker for advancer rounds until `condition` holds (no result backend: poll the DB)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        campaigns_advance.apply_async(queue=queue)
        for _ in range(20):
            if condition():
                return
            time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def _statuses(campaign: Campaign, step: str) -> dict[str, str]:
    return dict(Group.objects.filter(campaign=campaign, step__name=step).values_list("name", "status"))


def _workflows(campaign: Campaign) -> list[int]:
    return list(GroupAttempt.objects.filter(group__campaign=campaign).values_list("workflow_id", flat=True))


def _inject(job: dict) -> Outcome:
    """What the payload of a dispatched job does: out of memory below 4000 MB for isr 17 and 120;
    isr 33, isr 180 and the coadd of 101-200 always fail."""
    if job["jobName"] in ("isr_17", "isr_120"):
        return OOM if job["minRamCount"] < 4000 else OK
    if job["jobName"] in ("isr_33", "isr_180") or job["command"] == "run coadd 101-200":
        return BAD
    return OK


def test_three_step_campaign_with_rescue_accept_and_reject(worker, operator, queue, webhook):
    url, received = webhook
    campaign = campaign_create(owner=operator, spec_yaml=SPEC.replace("WEBHOOK", url))
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    pilots = ProtocolPilots(queue.name)
    run = lambda: pilots.run(_inject)  # noqa: E731

    # Step 1: four groups of 50; the worker submits them.
    _advance_until(worker, lambda: len(_workflows(campaign)) == 4, "step isr submitted")
    assert run() == 200
    _advance_until(worker, lambda: "running" not in _statuses(campaign, "isr").values(), "step isr judged")
    assert _statuses(campaign, "isr") == {
        "1-50": "failed",  # isr_17 OOM, isr_33 deterministic
        "51-100": "accepted",
        "101-150": "failed",  # isr_120 OOM
        "151-200": "failed",  # isr_180 deterministic
    }
    groups = {g.name: g for g in Group.objects.filter(campaign=campaign, step__name="isr")}

    # Rescue the out-of-memory class only, with more memory: the deterministic failures stay out.
    oom = {"error": "exe:137"}
    preview = group_rescue(group_id=groups["1-50"].pk, actor="operator", selection=oom, preview=True)
    assert (preview.details["rerun"], preview.details["left_failed"]) == (["isr_17"], ["isr_33"])
    for name in ("1-50", "101-150"):
        group_rescue(group_id=groups[name].pk, actor="operator", selection=oom, overrides={"memory_mb": 4000})
    with pytest.raises(ActionRefused, match="nothing to rerun"):
        group_rescue(group_id=groups["151-200"].pk, actor="operator", selection=oom)
    rescued = Job.objects.filter(workflow__campaign_attempt__kind="rescue")
    assert sorted(rescued.values_list("name", "request_memory_mb")) == [("isr_120", 4000), ("isr_17", 4000)]
    assert run() == 2
    _advance_until(worker, lambda: _statuses(campaign, "isr")["101-150"] == "accepted", "rescue judged")
    assert _statuses(campaign, "isr")["1-50"] == "failed"  # isr_33 still has no output

    # Accept the two groups whose remaining failures are deterministic (partial outputs).
    assert group_accept(group_id=groups["1-50"].pk, actor="operator").details["missing"] == ["isr_33"]
    assert group_accept(group_id=groups["151-200"].pk, actor="operator").details["missing"] == ["isr_180"]

    # Step 2 then step 3 start on their own.
    _advance_until(worker, lambda: len(_workflows(campaign)) == 8, "step calibrate submitted")
    assert run() == 200
    _advance_until(worker, lambda: len(_workflows(campaign)) == 10, "step coadd submitted")
    assert run() == 2
    _advance_until(
        worker, lambda: "running" not in _statuses(campaign, "coadd").values(), "step coadd judged"
    )
    assert _statuses(campaign, "coadd") == {"1-100": "accepted", "101-200": "failed"}

    # Reject the failed coadd: its step and the campaign end failed.
    coadd_bad = Group.objects.get(campaign=campaign, step__name="coadd", name="101-200")
    group_reject(group_id=coadd_bad.pk, actor="operator")
    _advance_until(worker, lambda: Campaign.objects.get(pk=campaign.pk).status == "failed", "campaign failed")

    # Final states and counts, exactly.
    assert list(
        Step.objects.filter(campaign=campaign).order_by("position").values_list("name", "status")
    ) == [
        ("isr", "done"),
        ("calibrate", "done"),
        ("coadd", "failed"),
    ]
    assert _statuses(campaign, "isr") == {
        "1-50": "accepted",
        "51-100": "accepted",
        "101-150": "accepted",
        "151-200": "accepted",
    }
    assert _statuses(campaign, "calibrate") == {"1-100": "accepted", "101-200": "accepted"}
    jobs = Job.objects.filter(workflow__campaign_attempt__group__campaign=campaign)
    assert jobs.count() == 200 + 2 + 200 + 2
    assert dict(jobs.values_list("jobstatus").annotate(n=Count("pandaid"))) == {
        "finished": 200 + 2 + 200 + 2 - 5,
        "failed": 5,  # isr_17, isr_120 (first attempts), isr_33, isr_180, coadd 101-200
    }
    assert sorted(
        GroupAttempt.objects.filter(group__campaign=campaign).values_list("group__step__name", "kind")
    ) == sorted(
        [("isr", "submit")] * 4
        + [("isr", "rescue")] * 2
        + [("calibrate", "submit")] * 2
        + [("coadd", "submit")] * 2
    )

    # The audit log: every operator action and every advancer decision, in order.
    log = [
        (
            a.actor,
            a.verb,
            a.object_type,
            a.object_id if a.object_type != "group" else Group.objects.get(pk=a.object_id).name,
            a.result,
        )
        for a in ActionLog.objects.filter(campaign=campaign).order_by("id")
    ]
    c = campaign.pk
    assert log[:2] == [
        ("operator", "create", "campaign", c, "ok"),
        ("operator", "launch", "campaign", c, "ok"),
    ]
    isr_judged = sorted(log[2:6])
    assert isr_judged == sorted(
        [
            ("advancer", "fail", "group", "1-50", "ok"),
            ("advancer", "accept", "group", "51-100", "ok"),
            ("advancer", "fail", "group", "101-150", "ok"),
            ("advancer", "fail", "group", "151-200", "ok"),
        ]
    )
    assert log[6:] == [
        ("operator", "rescue", "group", "1-50", "ok"),
        ("operator", "rescue", "group", "101-150", "ok"),
        ("operator", "rescue", "group", "151-200", "refused"),
        *log[9:11],
        ("operator", "accept", "group", "1-50", "ok"),
        ("operator", "accept", "group", "151-200", "ok"),
        *log[13:15],
        *log[15:17],
        ("operator", "reject", "group", "101-200", "ok"),
        ("advancer", "fail", "campaign", c, "ok"),
    ]
    assert sorted(log[9:11]) == [
        ("advancer", "accept", "group", "101-150", "ok"),
        ("advancer", "fail", "group", "1-50", "ok"),
    ]
    assert sorted(log[13:15]) == [
        ("advancer", "accept", "group", "1-100", "ok"),
        ("advancer", "accept", "group", "101-200", "ok"),
    ]
    assert sorted(log[15:17]) == [
        ("advancer", "accept", "group", "1-100", "ok"),
        ("advancer", "fail", "group", "101-200", "ok"),
    ]
    assert len(log) == 19

    # Notifications: one per failed group judgement of a new attempt, and the campaign's failure.
    events = sorted((r["event"], r.get("group", r.get("step", ""))) for r in received)
    assert events == sorted(
        [
            ("failure", "1-50"),
            ("failure", "101-150"),
            ("failure", "151-200"),
            ("failure", "1-50"),  # the rescue attempt still misses isr_33
            ("failure", "101-200"),
            ("failure", "coadd"),
        ]
    )
