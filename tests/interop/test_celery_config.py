"""The Celery app as configured in config/celery.py: at-least-once delivery, one task at a time,
time limits on every task, and a beat entry for every loop that names a registered task."""

from __future__ import annotations

from config.celery import BEAT_SCHEDULE, app, loop_periods
from dispatcher.loops import LOOPS


def test_delivery_is_at_least_once_and_one_task_at_a_time() -> None:
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_every_loop_and_the_provisioner_have_a_beat_entry_for_a_registered_task_with_time_limits() -> None:
    app.loader.import_default_modules()
    assert set(LOOPS) <= set(BEAT_SCHEDULE)
    for name, entry in BEAT_SCHEDULE.items():
        task = app.tasks[entry["task"]]
        assert task.soft_time_limit and task.time_limit and task.soft_time_limit < task.time_limit, name
        # A tick older than its period is dropped rather than run late.
        assert entry["options"]["expires"] == entry["schedule"], name


def test_run_loops_uses_the_beat_periods() -> None:
    assert loop_periods() == {
        "brokerage": 5.0,
        "watcher": 60.0,
        "rollup": 10.0,
        "monitor": 10.0,
        "provisioner": 30.0,
        "campaigns": 30.0,
        "janitor": 3600.0,
    }
