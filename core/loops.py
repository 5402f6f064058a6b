"""Running a loop: its one-step function under its lease, repeated within a time budget, and the
run recorded (docs/architecture.md#loops).

A step does a bounded amount of work and returns how much; it is safe to run twice, concurrently or
in a row, because every change it makes is a compare-and-set only one caller can win. The lease
makes a second worker, a second beat or a Celery redelivery find the loop taken and do nothing.
Which loops exist, their periods, limits and steps, is the table in `config/loops.py`; Celery's
tasks (`config/celery.py`) and the Celery-free runners (`manage.py run_loops`,
`manage.py run_local_pilots`) all come here through `Loop.run`.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from core.leases import lease_acquire, lease_release
from core.logging import log_context_reset, log_context_set
from core.models import LoopStatus
from core.unavailable import unavailable_dependency

log = logging.getLogger(__name__)


def step_batch(step: Callable[..., int], kwargs: dict[str, Any]) -> int | None:
    """The most a call of `step` does: its `limit` (given, else its default), or None when it has
    none. A call that did that much left work behind; one that did less found all there was."""
    if "limit" in kwargs:
        return int(kwargs["limit"])
    try:
        parameter = inspect.signature(step).parameters.get("limit")
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return None
    if parameter is None or not isinstance(parameter.default, int):
        return None
    return parameter.default


def loop_holder() -> str:
    """Who runs this step: host, process and a random tag (two threads of one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def loop_run(
    *,
    name: str,
    lease: str,
    step: Callable[..., int],
    ttl_s: float,
    budget_s: float,
    **kwargs: Any,
) -> int | None:
    """Run the loop `name` if its lease is free; returns the work done, or None when another
    runner holds the lease (a duplicate delivery, a second beat).

    1. Take the lease `lease` for `ttl_s` seconds; it must outlive the run (the Celery task's hard
       time limit), so a run still going is never joined by a second one, and a holder that died
       releases it by expiry.
    2. Call `step(**kwargs)`, again while the last call filled its batch (`step_batch`: its
       `limit`; a step without one, while it did anything) and `budget_s` seconds have not passed
       (0: one call a run). A backlog is worked off within the run; a trickle of new work is taken
       once a tick, so a loop that always finds a little never holds a worker for its whole
       budget while the other loops' ticks expire in the queue.
    3. Record the run in `LoopStatus` (started, finished, duration, work done, steps, and the error
       when a step raised, which is then raised again), and release the lease.
    """
    holder = loop_holder()
    if not lease_acquire(name=lease, holder=holder, ttl_s=ttl_s):
        log.info("loop %s: lease held elsewhere", name, extra={"event": "loop.skipped", "loop": name})
        return None
    started = timezone.now()
    clock = time.monotonic()
    total = steps = 0
    full = step_batch(step, kwargs) or 1
    context = log_context_set(loop=name)  # every line the step writes names its loop
    try:
        while True:
            done = step(**kwargs)
            total += done
            steps += 1
            if done < full or time.monotonic() - clock >= budget_s:
                break
    except Exception as exc:
        _status_record(name, holder, started, clock, total, steps, error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        _status_record(name, holder, started, clock, total, steps, error="")
    finally:
        log_context_reset(context)
        lease_release(name=lease, holder=holder)
    log.info(
        "loop %s did %d in %d step(s)",
        name,
        total,
        steps,
        extra={"event": "loop.ran", "loop": name, "done": total, "steps": steps},
    )
    return total


_STATUS_FIELDS = ["holder", "started_at", "finished_at", "duration_s", "done", "steps", "error"]


def _status_record(
    name: str, holder: str, started: dt.datetime, clock: float, done: int, steps: int, *, error: str
) -> None:
    """One upsert of the loop's LoopStatus row; `succeeded_at` moves only when the run completed.

    A failure to write it is logged, not raised: the run's own outcome (or exception) matters more
    than its record, and the next run writes the row again. The savepoint keeps a failed write
    from spoiling a transaction the caller may have open.
    """
    now = timezone.now()
    row = LoopStatus(
        name=name,
        holder=holder[:200],
        started_at=started,
        finished_at=now,
        duration_s=round(time.monotonic() - clock, 3),
        done=done,
        steps=steps,
        error=error[:2000],
        succeeded_at=None if error else now,
    )
    try:
        with transaction.atomic():
            LoopStatus.objects.bulk_create(
                [row],
                update_conflicts=True,
                unique_fields=["name"],
                update_fields=_STATUS_FIELDS if error else [*_STATUS_FIELDS, "succeeded_at"],
            )
    except DatabaseError as exc:
        if unavailable_dependency(exc) is not None:  # the database went away during the run
            log.warning(
                "loop %s: its run could not be recorded (%s: the database is unavailable)",
                name,
                type(exc).__name__,
                extra={"event": "loop.unrecorded"},
            )
        else:
            log.exception("loop %s: its run could not be recorded", name, extra={"event": "loop.unrecorded"})
