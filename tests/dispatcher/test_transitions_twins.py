"""The set-based transition and the counter fold have one write path each, with what differs
between PostgreSQL and SQLite in one function (dispatcher/services/transitions.py): the same
scenario, run on the suite's PostgreSQL and on a fresh SQLite database in a subprocess, must give
the same returns and the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
assert connection.vendor == "sqlite"
from tests.dispatcher.test_transitions_twins import scenario
print("TWIN " + json.dumps(scenario()))
"""


def scenario() -> dict[str, Any]:
    """Bulk transitions by ids, by `where` with a limit, with nothing selected and from the wrong
    state, then partial and full counter folds; pandaids are replaced by their rank."""
    from django.db.models import Q

    from dispatcher.models import Job, JobStatusLog, TaskCount, TaskCountDelta
    from dispatcher.queries import task_state_counts
    from dispatcher.services import jobs_transition_bulk, task_counts_fold
    from tests.factories import JobFactory, QueueFactory, TaskFactory

    QueueFactory(name="Q_TWIN")
    tasks = [TaskFactory(), TaskFactory()]
    ids = [JobFactory(task=tasks[i % 2]).pk for i in range(7)]
    rank = {pandaid: i for i, pandaid in enumerate(ids)}

    def ranks(moved: list[int]) -> list[int]:
        return [rank[p] for p in moved]

    out: dict[str, Any] = {
        "activated": ranks(
            jobs_transition_bulk(
                source="defined",
                to="activated",
                cause="brokered",
                pandaids=[*ids[:4], 10**12],
                fields={"queue_id": "Q_TWIN", "brokerageerrorcode": 0},
            )
        ),
        "cancelled": ranks(
            jobs_transition_bulk(
                source="defined",
                to="cancelled",
                cause="cancelled by a test",
                where=Q(task=tasks[0]) | Q(task=tasks[1]),
                limit=2,
                fields={"attemptnr": 3},
            )
        ),
        "sent": ranks(
            jobs_transition_bulk(
                source="activated", to="sent", cause="dispatched", pandaids=ids, fields={"node": "wn1"}
            )
        ),
        "nothing": jobs_transition_bulk(source="defined", to="cancelled", cause="x", where=Q(pk__in=[])),
        "empty": jobs_transition_bulk(source="defined", to="cancelled", cause="x", pandaids=[]),
        "wrong_state": jobs_transition_bulk(source="running", to="finished", cause="x", pandaids=ids),
    }
    out["jobs"] = [
        [rank[p], status, queue, attempt, node, changed is not None]
        for p, status, queue, attempt, node, changed in Job.objects.order_by("pk").values_list(
            "pk", "jobstatus", "queue_id", "attemptnr", "node", "statechangetime"
        )
    ]
    out["log"] = sorted(
        [rank[p], attempt, status, previous, cause]
        for p, attempt, status, previous, cause in JobStatusLog.objects.values_list(
            "job_id", "attemptnr", "jobstatus", "previous", "cause"
        )
    )
    task_ids = [t.pk for t in tasks]
    out["counts"] = [task_state_counts(task_ids)[t] for t in task_ids]
    out["deltas"] = TaskCountDelta.objects.count()
    out["folds"] = [task_counts_fold(batch=5), task_counts_fold(), task_counts_fold()]
    out["folded"] = [
        {s: n for s, n in TaskCount.objects.filter(task_id=t).values_list("jobstatus", "count") if n}
        for t in task_ids
    ]
    return out


@pytest.mark.django_db
def test_bulk_transitions_and_the_counter_fold_mean_the_same_on_both_databases(tmp_path: Path) -> None:
    on_postgresql = json.loads(json.dumps(scenario()))
    assert on_postgresql["activated"] == [0, 1, 2, 3]
    assert on_postgresql["cancelled"] == [4, 5]
    assert on_postgresql["sent"] == [0, 1, 2, 3]
    assert on_postgresql["nothing"] == on_postgresql["empty"] == on_postgresql["wrong_state"] == []
    assert on_postgresql["folds"] == [5, on_postgresql["deltas"] - 5, 0]
    assert on_postgresql["folded"] == on_postgresql["counts"]

    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'twin.sqlite3'}",
        "AILURO_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AILURO_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("TWIN ")]
    assert json.loads(line.removeprefix("TWIN ")) == on_postgresql
