from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from core.models import LoopStatus
from dispatcher.models import Job, Task
from tests.factories import JobFactory, QueueFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_run_loops_once_runs_each_selected_loop_and_reports_what_it_did() -> None:
    QueueFactory(max_rss_mb=8000)
    job = JobFactory()
    out = io.StringIO()

    call_command("run_loops", "--once", "--only", "brokerage", "rollup", stdout=out)

    assert out.getvalue().splitlines()[0] == "brokerage: 1"
    assert out.getvalue().splitlines()[1].startswith("rollup: ")
    assert Job.objects.get(pk=job.pk).jobstatus == "activated"
    assert Task.objects.get(pk=job.task_id).status == "running"
    assert dict(LoopStatus.objects.values_list("name", "done"))["brokerage"] == 1
    assert set(LoopStatus.objects.values_list("name", flat=True)) == {"brokerage", "rollup"}


@pytest.mark.django_db
def test_skipped_loops_are_left_out() -> None:
    out = io.StringIO()

    call_command("run_loops", "--once", "--skip", "provisioner", "--verbosity", "2", stdout=out)

    ran = [line.split(":")[0] for line in out.getvalue().splitlines()]
    assert ran == [
        "brokerage",
        "watcher",
        "rollup",
        "monitor",
        "campaigns",
        "budgets",
        "requests",
        "janitor",
        "cache_expiry",
    ]
    assert "provisioner" not in set(LoopStatus.objects.values_list("name", flat=True))


@pytest.mark.django_db
def test_an_unknown_loop_name_is_refused() -> None:
    with pytest.raises(CommandError, match="unknown loop"):
        call_command("run_loops", "--once", "--only", "brokerage", "sweeper")
    with pytest.raises(CommandError, match="unknown loop"):
        call_command("run_loops", "--once", "--skip", "provisoner")


@pytest.mark.django_db(transaction=True)
def test_run_loops_keeps_running_until_terminated(tmp_path: Path) -> None:
    QueueFactory(max_rss_mb=8000)
    job = JobFactory()
    db = connection.settings_dict
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "AILURO_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "loops.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_loops", "--sleep", "0.2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while Job.objects.get(pk=job.pk).jobstatus != "activated" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert Job.objects.get(pk=job.pk).jobstatus == "activated", log.read_text()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0
    # The runs are in the JSON log, one object a line (no plain summary lines outside `--once`).
    events = [json.loads(line) for line in log.read_text().splitlines() if line]
    assert {"event": "loop.ran", "loop": "brokerage", "done": 1}.items() <= next(
        e for e in events if e.get("loop") == "brokerage" and e.get("done")
    ).items()
