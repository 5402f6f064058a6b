"""The Celery app: beat's schedule and one task per loop, both made from the loop table
(`config/loops.py`, docs/architecture.md#loops).

Delivery is at least once (`acks_late`; a redelivered or duplicated tick is harmless because every
loop takes a database lease and claims work with compare-and-set updates), one task at a time per
worker process (`prefetch_multiplier=1`: a slow tick does not hold others hostage), and every task
has the soft and hard time limits of its loop. Production uses Redis or RabbitMQ
(CELERY_BROKER_URL); the embedded run does not use Celery at all: `manage.py run_loops` runs the
same table.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging, task_postrun, task_prerun

from config.loops import LOOPS, Loop

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


@celeryd_init.connect
@setup_logging.connect
def _logging_from_settings(**_: Any) -> None:
    """Workers and beat log like every other process: Django's LOGGING, one JSON object per line on
    stdout (docs/architecture.md#errors-and-logs), not Celery's text format. Celery leaves logging
    to a receiver of `setup_logging`; `celeryd_init` comes earlier, before the worker's start-up
    checks, whose warnings (running as root, say) become log records too, as do Celery's
    deprecation notices. Started with `celery -q`, nothing else reaches the output (no banner)."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)


_task_log_context: dict[str, Any] = {}


@task_prerun.connect
def _task_log_fields(task_id: str = "", task: Any = None, **_: Any) -> None:
    """Every line a task writes carries its Celery task id and name (and, through loop_run, its
    loop); one task at a time per worker process, so the token waits here until postrun."""
    from core.logging import log_context_set

    _task_log_context[task_id] = log_context_set(task_id=task_id, task=getattr(task, "name", ""))


@task_postrun.connect
def _task_log_fields_end(task_id: str = "", **_: Any) -> None:
    from core.logging import log_context_reset

    token = _task_log_context.pop(task_id, None)
    if token is not None:
        log_context_reset(token)


app = Celery("ailuro")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
# A worker process killed mid-tick (OOM, SIGKILL) gets its message acked rather than redelivered in a
# loop; the next beat tick redoes the step anyway.
app.conf.task_reject_on_worker_lost = False
# Each entry's `expires` equals its period: a tick that waited in the queue longer than that (workers
# down, backlog) is dropped instead of running late, since the next one is already on its way.
app.conf.beat_schedule = {
    loop.name: {"task": loop.task, "schedule": loop.period_s, "options": {"expires": loop.period_s}}
    for loop in LOOPS
}


def _loop_task(loop: Loop) -> Any:
    """The loop's Celery task: no argument, one `Loop.run` (the lease, the steps and the record are
    `core.loops.loop_run`'s)."""

    def run() -> int | None:
        return loop.run()

    run.__name__ = run.__qualname__ = f"loop_{loop.name}"
    run.__doc__ = f"One run of the {loop.name} loop ({loop.step})."
    return app.task(name=loop.task, soft_time_limit=loop.soft_time_limit_s, time_limit=loop.time_limit_s)(run)


LOOP_TASKS: dict[str, Any] = {loop.name: _loop_task(loop) for loop in LOOPS}
