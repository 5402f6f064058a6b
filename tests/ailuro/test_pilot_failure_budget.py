"""A failure budget against real `ailuro pilot` processes and the real server (gunicorn on the test
database): jobs that sleep and exit 1 on a label with a tiny budget; the `budgets` loop pauses the
task once two failures have spent it, and pilots get none of its jobs any more."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.loops import loop_named
from dispatcher.models import Job, JobAttempt, Task
from dispatcher.services import broker_one_batch
from dispatcher.services.submit import workflow_submit_spec
from tests.ailuro.server import AiluroServer, pilot_process, pilot_token_file, run_pilot
from tests.factories import QueueFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiluroServer]:
    srv = AiluroServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


def test_pilots_get_no_more_jobs_of_a_task_its_failure_budget_paused(
    server: AiluroServer, tmp_path: Path
) -> None:
    queue = QueueFactory(name="LOCAL_BUDGET")
    spec = {
        "name": "burning",
        # 0.0015 core-hours = 5.4 core-seconds: spent by two failed attempts of about 3 s on one core,
        # not by one (even a slow one, under 5.5 s).
        "labels": {"bad": {"failure_budget": {"core_hours": 0.0015}, "max_attempts": 1}},
        "jobs": [{"name": f"bad{i}", "label": "bad", "command": "sleep 3; exit 1"} for i in range(8)],
    }
    workflow = workflow_submit_spec(owner=UserFactory(username="alice"), spec=spec)
    task = Task.objects.get(workflow=workflow)
    assert broker_one_batch(limit=100) == 8
    token = pilot_token_file(tmp_path)
    budgets = loop_named("budgets")
    with pilot_process(server.url, queue.name, token, tmp_path / "p1", "--idle-wait", "3") as pilot:
        deadline = time.monotonic() + 120
        while Task.objects.get(pk=task.pk).status != "paused":
            assert time.monotonic() < deadline, "the task was never paused"
            assert pilot.poll() is None, "the pilot ended before the budget was spent"
            budgets.run()  # what beat runs every minute
            time.sleep(0.5)
        pilot.wait(timeout=120)
        assert pilot.returncode == 0, pilot.stderr.read() if pilot.stderr else ""
    failed = JobAttempt.objects.filter(job__task=task, jobstatus="failed")
    spent = list(failed.values_list("walltime_s", flat=True))
    # Paused after the second failure; at most the one job a pilot held meanwhile ran on.
    assert 2 <= len(spent) <= 3, spent
    task.refresh_from_db()
    assert task.pause_reason.startswith("failure budget exceeded: 2 failed attempts used 0.00")
    untouched = Job.objects.filter(
        task=task, jobstatus="defined", dispatched_at__isnull=True, queue__isnull=True
    )
    assert untouched.count() == 8 - len(spent)
    # A new pilot gets nothing of it.
    result = run_pilot(server.url, queue.name, token, tmp_path / "p2", "--idle-wait", "2")
    assert result.returncode == 0, result.stderr
    assert failed.count() == len(spent)
    assert not Job.objects.filter(task=task, jobstatus__in=["sent", "starting", "running"]).exists()
