"""Failure budgets: a label whose failed attempts use more core-hours than its budget allows is
paused by the `budgets` loop — nothing more of it is dispatched, the reason is on its task and
workflow pages and in a log event — and an operator's resume starts the count again. Attempts are
dispatched and ended through the pilot protocol's services (dispatch, running, failed with the
pilot's times), so their walltime is what a pilot reports.

Runs on PostgreSQL and on SQLite: `DATABASE_URL=sqlite:////tmp/x.sqlite3 python -m pytest -q
tests/dispatcher/test_failure_budget.py`."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from config.loops import loop_named
from dispatcher.models import Job, JobAttempt, Task, Workflow
from dispatcher.queries import CoreUse
from dispatcher.services import (
    DispatchRequest,
    PilotUpdate,
    broker_one_batch,
    job_pilot_update,
    job_transition,
    jobs_dispatch,
    workflow_resume,
)
from dispatcher.services.budgets import budget_exceeded, failure_budgets_check
from dispatcher.services.submit import workflow_submit_spec
from dispatcher.workflows import WorkflowInvalid
from tests.factories import QueueFactory, UserFactory

pytestmark = pytest.mark.django_db

BAD = {"exeerrorcode": 65, "exeerrordiag": "ValueError: bad input in /data/raw/123.fits"}


OTHER = "Q_OTHER"


def _spec(budget: Any, queue: str = "Q_BUDGET") -> dict[str, Any]:
    """Six `bad` jobs of 2 cores under `budget` on `queue`, four `good` jobs without one elsewhere."""
    return {
        "name": "budgeted",
        "labels": {
            "bad": {
                "failure_budget": budget,
                "max_attempts": 5,
                "resources": {"cores": 2},
                "sites": {"include": [queue]},
            },
            "good": {"sites": {"include": [OTHER]}},
        },
        "jobs": [{"name": f"bad{i}", "label": "bad", "command": "exit 1"} for i in range(6)]
        + [{"name": f"good{i}", "label": "good", "command": "true"} for i in range(4)],
    }


def _attempt(queue: str, *, status: str, walltime_s: float, rss_kb: int = 500_000) -> int:
    """One pilot cycle on `queue`: brokerage, dispatch of one job, running (started `walltime_s`
    ago), then the final update; returns the pandaid."""
    broker_one_batch(limit=100)
    got = jobs_dispatch(request=DispatchRequest(queue=queue, n_jobs=1, node="wn1"))
    assert len(got) == 1, f"nothing dispatched on {queue}"
    mine = got[0]
    now = timezone.now()
    common = {"pandaid": mine["pandaid"], "attemptnr": mine["attemptnr"], "lease": mine["lease"]}
    reply = job_pilot_update(
        update=PilotUpdate(status="running", starttime=now - dt.timedelta(seconds=walltime_s), **common),
        queues=None,
    )
    assert reply.status == "running", reply
    reply = job_pilot_update(
        update=PilotUpdate(
            status=status,
            endtime=now,
            metrics={"max_rss_kb": rss_kb},
            errors=BAD if status == "failed" else {},
            **common,
        ),
        queues=None,
    )
    assert reply.command is None, reply
    return int(mine["pandaid"])


@pytest.fixture
def queue() -> str:
    QueueFactory(name=OTHER, max_rss_mb=8000, max_cores=8)
    return str(QueueFactory(name="Q_BUDGET", max_rss_mb=8000, max_cores=8).name)


def test_a_label_over_its_core_hour_budget_is_paused_by_the_loop_and_resumed_by_an_operator(
    queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    wf = workflow_submit_spec(owner=UserFactory(username="alice"), spec=_spec({"core_hours": 1.0}))
    bad = Task.objects.get(workflow=wf, label="bad")
    assert bad.failure_budget == {"core_hours": 1.0}
    # 20 min × 2 cores = 0.667 core-hours: under budget, nothing paused.
    _attempt(queue, status="failed", walltime_s=1200)
    assert failure_budgets_check() == 0
    # A second one: 1.333 core-hours of failures, over the budget of 1.
    _attempt(queue, status="failed", walltime_s=1200)
    caplog.set_level(logging.WARNING, logger="dispatcher.services.workflow_actions")
    assert loop_named("budgets").run() == 1  # the loop table's entry, as beat runs it
    bad.refresh_from_db()
    reason = "failure budget exceeded: 2 failed attempts used 1.333 core-hours (budget 1 core-hours)"
    assert (bad.status, bad.pause_reason) == ("paused", reason)
    assert bad.paused_at is not None
    # The event: one structured log line.
    events = [r for r in caplog.records if getattr(r, "event", "") == "task.budget_pause"]
    assert [(r.jeditaskid, r.workflow_id, r.reason) for r in events] == [(bad.pk, wf.pk, reason)]  # type: ignore[attr-defined]
    # Nothing more of the task is dispatched: its jobs are off the queues, brokerage leaves them,
    # and a pilot asking for everything gets only the other label's jobs.
    assert not Job.objects.filter(task=bad, jobstatus="activated").exists()
    broker_one_batch(limit=100)
    assert jobs_dispatch(request=DispatchRequest(queue=queue, n_jobs=50, node="wn2")) == []
    got = jobs_dispatch(request=DispatchRequest(queue=OTHER, n_jobs=50, node="wn3"))
    assert sorted(Job.objects.get(pk=j["pandaid"]).name for j in got) == ["good0", "good1", "good2", "good3"]
    # The other task runs on under no budget; a second check pauses nothing more.
    assert Task.objects.get(workflow=wf, label="good").status != "paused"
    assert failure_budgets_check() == 0
    # The pages show why.
    client = Client()
    page = client.get(f"/task/{bad.pk}/").content.decode()
    assert 'id="task-pause-reason"' in page and reason in page
    assert client.get(f"/task/{bad.pk}/?json").json()["pause_reason"] == reason
    assert reason in client.get(f"/workflow/{wf.pk}/").content.decode()
    tasks = {t["label"]: t for t in client.get(f"/workflow/{wf.pk}/?json").json()["tasks"]}
    assert (tasks["bad"]["pause_reason"], tasks["good"]["pause_reason"]) == (reason, "")
    assert tasks["bad"]["wasted_core_seconds"] == 2 * 1200 * 2
    wasted = client.get(f"/task/{bad.pk}/?json").json()
    assert (wasted["wasted_core_seconds"], wasted["failed_attempts"]) == (2 * 1200 * 2, 2)

    # An operator resumes: the budget counts from here, so the old failures pause nothing.
    assert workflow_resume(workflow_id=wf.pk, actor="operator", labels=["bad"]) == {"resumed_tasks": 1}
    bad.refresh_from_db()
    assert (bad.status, bad.pause_reason, bad.paused_at) == ("running", "", None)
    assert bad.budget_since is not None
    assert failure_budgets_check() == 0
    assert broker_one_batch(limit=100) > 0
    assert Job.objects.filter(task=bad, jobstatus="activated").exists()
    # Failures after the resume count again: two more pause it again.
    _attempt(queue, status="failed", walltime_s=1200)
    _attempt(queue, status="failed", walltime_s=1200)
    assert failure_budgets_check() == 1
    assert Task.objects.get(pk=bad.pk).status == "paused"
    assert JobAttempt.objects.filter(job__task=bad, jobstatus="failed").count() == 4


def test_the_fraction_needs_its_minimum_sample(queue: str) -> None:
    budget = {"fraction": 0.5, "min_attempts": 3}
    wf = workflow_submit_spec(owner=UserFactory(), spec=_spec(budget))
    bad = Task.objects.get(workflow=wf, label="bad")
    # One early failure is all the task has done: 100 % failed, but under the minimum sample.
    _attempt(queue, status="failed", walltime_s=600)
    assert failure_budgets_check() == 0
    _attempt(queue, status="finished", walltime_s=600)
    assert failure_budgets_check() == 0  # (no new failure, and 2 attempts anyway)
    _attempt(queue, status="failed", walltime_s=600)
    assert failure_budgets_check() == 1  # 2 of 3 attempts, 67 % of core-hours > 50 %
    bad.refresh_from_db()
    assert bad.pause_reason == (
        "failure budget exceeded: 2 of 3 attempts failed, 0.667 of 1.000 core-hours (67%; budget 50%)"
    )


def test_no_budget_by_default_a_site_default_and_a_label_that_opts_out(queue: str, settings: Any) -> None:
    wf = workflow_submit_spec(owner=UserFactory(), spec=_spec(None))
    _attempt(queue, status="failed", walltime_s=7200)  # 4 core-hours
    assert failure_budgets_check() == 0  # the default is off
    settings.AILURO = {**settings.AILURO, "FAILURE_BUDGET_CORE_HOURS": 2.0}
    assert failure_budgets_check() == 1
    assert Task.objects.get(workflow=wf, label="bad").status == "paused"
    # A label that says `failure_budget: false` runs under none, whatever the site's default.
    off = workflow_submit_spec(owner=UserFactory(), spec=_spec(False))
    assert Task.objects.get(workflow=off, label="bad").failure_budget is False
    _attempt(queue, status="failed", walltime_s=7200)
    assert failure_budgets_check() == 0
    assert Task.objects.get(workflow=off, label="bad").status != "paused"
    assert Workflow.objects.get(pk=off.pk).status != "paused"


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"core_hours": -1}, "labels.bad.failure_budget.core_hours must be a number at least 0.0"),
        ({"fraction": 2}, "labels.bad.failure_budget.fraction must be a number between 0.0 and 1.0"),
        ({"min_attempts": 3}, "labels.bad.failure_budget needs core_hours or fraction"),
        ({"core_hour": 1}, "labels.bad.failure_budget has unknown key 'core_hour'"),
        ("lots", "labels.bad.failure_budget must be a mapping or false"),
    ],
)
def test_a_bad_budget_is_refused_naming_the_field(budget: Any, message: str) -> None:
    with pytest.raises(WorkflowInvalid) as refused:
        workflow_submit_spec(owner=UserFactory(), spec=_spec(budget))
    assert str(refused.value).startswith(message)
    assert refused.value.field.startswith("labels.bad.failure_budget")


def test_budget_exceeded_reads_core_hours_and_fraction() -> None:
    assert budget_exceeded({"core_hours": 1.0}, CoreUse(3600, 7200, 4, 1)) is None  # exactly at: not over
    assert budget_exceeded({"core_hours": 1.0}, CoreUse(3601, 7200, 4, 1)) is not None
    assert budget_exceeded({"fraction": 0.5}, CoreUse(3601, 7200, 9, 5)) is None  # under 10 attempts
    assert budget_exceeded({"fraction": 0.5}, CoreUse(3601, 7200, 10, 5)) is not None
    assert budget_exceeded({"fraction": 0.5}, CoreUse(0, 0, 10, 10)) is None  # no core-hours used


def test_a_job_a_racing_brokerage_activated_after_the_pause_is_taken_back_by_the_next_run(queue: str) -> None:
    wf = workflow_submit_spec(owner=UserFactory(), spec=_spec({"core_hours": 0.1}))
    bad = Task.objects.get(workflow=wf, label="bad")
    _attempt(queue, status="failed", walltime_s=600)
    assert failure_budgets_check() == 1
    # A brokerage run that read the paused tasks before the pause committed writes its placement now.
    late = Job.objects.filter(task=bad, jobstatus="defined").order_by("pandaid").first()
    assert late is not None
    job_transition(pandaid=late.pk, to="activated", cause="brokered to Q_BUDGET", fields={"queue_id": queue})
    assert failure_budgets_check() == 0  # the next run of the loop
    late.refresh_from_db()
    assert (late.jobstatus, late.queue_id) == ("defined", None)
    assert jobs_dispatch(request=DispatchRequest(queue=queue, n_jobs=10, node="wn9")) == []
