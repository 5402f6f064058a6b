"""Celery tasks of the dispatcher: thin interfaces over the loops (STYLE §5).

No arguments but the loop's name; the work and the lease are in `dispatcher.loops.loop_run`. Each
task carries its own soft and hard time limits, below the lease's lifetime (`loop_run`), so a step
killed by the hard limit lets the lease expire instead of overlapping a second step.
"""

from __future__ import annotations

from celery import shared_task

from dispatcher.loops import loop_run

# Seconds: a step is bounded per run (hundreds to a few thousand rows), so it ends well within these.
SOFT_LIMIT_S = 60
HARD_LIMIT_S = 90


@shared_task(name="dispatcher.loop_brokerage", soft_time_limit=SOFT_LIMIT_S, time_limit=HARD_LIMIT_S)
def loop_brokerage() -> int | None:
    return loop_run(name="brokerage")


@shared_task(name="dispatcher.loop_watcher", soft_time_limit=SOFT_LIMIT_S, time_limit=HARD_LIMIT_S)
def loop_watcher() -> int | None:
    return loop_run(name="watcher")


@shared_task(name="dispatcher.loop_rollup", soft_time_limit=SOFT_LIMIT_S, time_limit=HARD_LIMIT_S)
def loop_rollup() -> int | None:
    return loop_run(name="rollup")


@shared_task(name="dispatcher.loop_janitor", soft_time_limit=SOFT_LIMIT_S, time_limit=HARD_LIMIT_S)
def loop_janitor() -> int | None:
    return loop_run(name="janitor")
