"""Duplicate delivery (docs/architecture.md#loops): two workers and two beats on the real
Redis broker send and run every loop twice; each job is still activated once and each lost attempt
failed once."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.db.models import Count
from django.utils import timezone

from config.celery import app
from dispatcher.models import Job, JobAttempt, JobStatusLog
from dispatcher.queries import task_state_counts
from dispatcher.services import NewJob, job_transition, workflow_submit
from tests.factories import QueueFactory, UserFactory
from tests.interop.celery_procs import beat_start, broker_purge, process_stop, wait_for, worker_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("default_retry_rules")]


def _sent_by_beat(log: Path, task: str) -> int:
    return len(re.findall(rf"Sending due task \w+ \({re.escape(task)}\)", log.read_text()))


def test_two_workers_and_two_beats_act_once(tmp_path: Path) -> None:
    QueueFactory(name="MEDIUM", max_rss_mb=8000)
    wf = workflow_submit(
        owner=UserFactory(),
        name="dup",
        jobs=[NewJob(name=f"j{i}", label="l", command="true") for i in range(300)],
    )
    task_id = wf.tasks.get().pk
    broker_purge()
    logs = [tmp_path / n for n in ("w1.log", "w2.log", "b1.log", "b2.log")]
    procs = [worker_start("dup1", logs[0]), worker_start("dup2", logs[1])]
    procs += [beat_start(tmp_path / "s1", logs[2]), beat_start(tmp_path / "s2", logs[3])]
    try:
        # 1. Brokerage from the two beats alone: both send every tick, each job is activated once.
        wait_for(
            lambda: (
                all(_sent_by_beat(log, "dispatcher.loop_brokerage") >= 2 for log in logs[2:])
                and Job.objects.filter(workflow=wf, jobstatus="activated").count() == 300
            ),
            what="two brokerage ticks from each beat and every job activated",
            timeout=90,
            logs=logs,
        )
        per_job = _activations_per_job(wf.pk)
        assert set(per_job.values()) == {1} and len(per_job) == 300
        assert task_state_counts([task_id])[task_id] == {"activated": 300}

        # 2. Forty watcher ticks at once on both workers for 50 silent jobs: one failed attempt each.
        silent = list(Job.objects.filter(workflow=wf).order_by("pk").values_list("pk", flat=True)[:50])
        long_ago = timezone.now() - dt.timedelta(hours=3)
        for pandaid in silent:
            job_transition(pandaid=pandaid, to="sent", cause="pilot getJob")
            job_transition(pandaid=pandaid, to="running", cause="pilot", fields={"heartbeat_at": long_ago})
        for _ in range(40):
            app.send_task("dispatcher.loop_watcher")
        wait_for(
            lambda: Job.objects.filter(pk__in=silent, jobstatus="defined", attemptnr=2).count() == 50,
            what="every silent job failed and retried",
            logs=logs,
        )
        wait_for(
            lambda: all("loop_watcher" in log.read_text() for log in logs[:2]),
            what="both workers ran watcher ticks",
            logs=logs,
        )
    finally:
        for proc in procs:
            process_stop(proc)

    attempts = dict(
        JobAttempt.objects.filter(job__in=silent)
        .values("job")
        .annotate(n=Count("pk"))
        .values_list("job", "n")
    )
    assert attempts == dict.fromkeys(silent, 1)
    assert set(
        JobAttempt.objects.filter(job__in=silent).values_list("jobdispatchererrorcode", flat=True)
    ) == {100}
    assert Job.objects.filter(pk__in=silent).exclude(attemptnr=2).count() == 0
    assert task_state_counts([task_id])[task_id] == {"activated": 250, "defined": 50}


def _activations_per_job(workflow_id: int) -> dict[int, int]:
    return dict(
        JobStatusLog.objects.filter(job__workflow_id=workflow_id, jobstatus="activated")
        .values("job")
        .annotate(n=Count("pk"))
        .values_list("job", "n")
    )
