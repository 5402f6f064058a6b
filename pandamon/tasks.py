"""Celery wrapper of the monitor loop: no business rules here (STYLE §5)."""

from __future__ import annotations

from celery import shared_task

from dispatcher.loops import loop_run


# Celery is untyped (dispatcher/tasks.py relies on the strict override's looser decorator rule).
@shared_task(name="pandamon.loop_monitor", soft_time_limit=60, time_limit=90)  # type: ignore[untyped-decorator]
def loop_monitor() -> int | None:
    """Fold the monitor's rollup deltas under the loop's lease (`pandamon.rollups.rollups_fold`)."""
    return loop_run(name="monitor")
