"""The embedded run's SQLite path of dispatch and heartbeat (the suite itself runs on PostgreSQL):
a subprocess migrates a fresh SQLite database and drives the same services through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
assert connection.vendor == "sqlite"
from dispatcher.models import Job, JobAttempt, JobStatusLog, Queue, Site
from dispatcher.queries import task_state_counts
from dispatcher.services import DispatchRequest, PilotUpdate, job_pilot_update, jobs_dispatch, job_transition
from tests.factories import JobFactory, TaskFactory

queue = Queue.objects.create(name="Q", site=Site.objects.create(name="S"))
task = TaskFactory()
low = JobFactory(task=task, jobstatus="activated", queue=queue, currentpriority=1)
high = JobFactory(task=task, jobstatus="activated", queue=queue, currentpriority=9)
big = JobFactory(task=task, jobstatus="activated", queue=queue, request_memory_mb=9000)

got = jobs_dispatch(request=DispatchRequest(queue="Q", n_jobs=5, memory_mb=4000, node="wn"))
assert [j["pandaid"] for j in got] == [high.pk, low.pk], got
assert len({j["lease"] for j in got}) == 2 and all(len(j["lease"]) == 32 for j in got)
assert jobs_dispatch(request=DispatchRequest(queue="Q", memory_mb=4000)) == []
assert Job.objects.get(pk=big.pk).jobstatus == "activated"

first = got[0]
def update(status, **kw):
    kw.setdefault("attemptnr", first["attemptnr"])
    kw.setdefault("lease", first["lease"])
    return job_pilot_update(update=PilotUpdate(pandaid=first["pandaid"], status=status, **kw), queues=None)

assert update("running").status == "running"
assert update("starting").status == "running"  # never backwards
assert update("running", attemptnr=5).command == "tobekilled"
assert update("running", lease="x" * 32).command == "tobekilled"
assert update("finished").status == "finished"
assert update("finished").command is None  # duplicate
assert JobAttempt.objects.filter(job_id=first["pandaid"]).count() == 1
history = list(JobStatusLog.objects.filter(job_id=first["pandaid"]).values_list("jobstatus", flat=True))
assert history == ["sent", "running", "finished"], history
job_transition(pandaid=got[1]["pandaid"], to="cancelled", cause="operator")
killed = job_pilot_update(
    update=PilotUpdate(pandaid=got[1]["pandaid"], status="running", attemptnr=1), queues=None
)
assert killed.command == "tobekilled"
assert task_state_counts([task.pk])[task.pk] == {"finished": 1, "cancelled": 1, "activated": 1}
print("SQLITE-OK")
"""


def test_dispatch_and_updates_behave_the_same_on_sqlite(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "AILURO_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AILURO_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "SQLITE-OK" in result.stdout
