"""Loop runs as `core.loops.loop_run` records them, written directly: fresh ones for a world whose
beat and workers are up (the test process runs neither), old ones for a world whose beat stopped."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from config.loops import LOOPS
from core.models import LoopStatus


def record_run(name: str, *, ago_s: float, error: str = "") -> None:
    """The row a run of loop `name` that ended `ago_s` seconds ago leaves; a run with an `error`
    leaves the previous success (none here) alone."""
    at = timezone.now() - dt.timedelta(seconds=ago_s)
    LoopStatus.objects.update_or_create(
        name=name,
        defaults={
            "holder": "worker-1:42:abcd",
            "started_at": at - dt.timedelta(seconds=1),
            "finished_at": at,
            "duration_s": 1.0,
            "done": 3,
            "steps": 2,
            "error": error,
            "succeeded_at": None if error else at,
        },
    )


def record_fresh_runs() -> None:
    """Every loop of the table ran a second ago."""
    for loop in LOOPS:
        record_run(loop.name, ago_s=1)
