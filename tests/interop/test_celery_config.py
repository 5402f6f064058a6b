"""The Celery app as configured in config/celery.py from the loop table (config/loops.py):
at-least-once delivery, one task at a time, a beat entry and a registered task with time limits
for every loop, and leases that outlive the limits."""

from __future__ import annotations

from config.celery import LOOP_TASKS, app
from config.loops import LOOPS


def test_delivery_is_at_least_once_and_one_task_at_a_time() -> None:
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_every_loop_has_a_beat_entry_for_a_registered_task_with_time_limits() -> None:
    assert set(app.conf.beat_schedule) == {loop.name for loop in LOOPS}
    for loop in LOOPS:
        entry = app.conf.beat_schedule[loop.name]
        assert entry["task"] == loop.task == LOOP_TASKS[loop.name].name
        task = app.tasks[loop.task]
        assert 0 < task.soft_time_limit < task.time_limit < loop.lease_ttl_s, loop.name
        # A tick older than its period is dropped rather than run late.
        assert entry["schedule"] == entry["options"]["expires"] == loop.period_s, loop.name


def test_the_task_names_deployed_beats_and_workers_know_stay_as_they_were() -> None:
    assert {loop.name: loop.task for loop in LOOPS} == {
        "brokerage": "dispatcher.loop_brokerage",
        "watcher": "dispatcher.loop_watcher",
        "rollup": "dispatcher.loop_rollup",
        "monitor": "pandamon.loop_monitor",
        "provisioner": "harvester.provision",
        "campaigns": "campaigns.advance",
        "janitor": "dispatcher.loop_janitor",
        "budgets": "dispatcher.loop_budgets",
        "requests": "dispatcher.loop_requests",
        "cache_expiry": "pandacompat.loop_cache_expiry",
    }


def test_every_step_of_the_table_is_a_function_and_each_loop_its_own_lease() -> None:
    assert len({loop.name for loop in LOOPS}) == len({loop.lease for loop in LOOPS}) == len(LOOPS)
    for loop in LOOPS:
        assert callable(loop.step_function()), loop.step
        assert loop.budget_s < loop.soft_time_limit_s, loop.name
