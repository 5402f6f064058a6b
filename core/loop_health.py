"""Is each loop running: its last run (`core.LoopStatus`) judged against its allowed lag
(docs/architecture.md#loops, decision 0007).

The loops and their allowed lags come from `settings.AILURO_LOOPS` (name → `period_s`,
`max_lag_s`), which `config/settings.py` builds from the loop table `config/loops.py`; core reads
the setting and never imports config. A loop is **stalled** when its last completed run
(`succeeded_at`) is older than its `max_lag_s`: a stopped beat, workers that are all gone or all
busy, or a step that fails every run (a failed run leaves `succeeded_at` alone).

A loop that has not completed a run yet (no row, or only failed runs) has nothing to measure from
but this process's start (`PROCESS_STARTED_AT`): it is stalled once this process has been up
longer than its `max_lag_s` plus `settings.AILURO_LOOP_GRACE_S`. A fresh deployment is therefore
ready while its workers and beat come up, and is named as soon as one of its loops has had time to
run and has not; a process that reads a database whose loops never run (a web-only test, a
deployment without beat) is named after that grace too, which is what an operator must see.

Both readers — `/readyz` (`core.health.loops_part`) and the monitor's loop strip
(`pandamon.queries.loops`) — use `loop_states`, one query over `LoopStatus`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from core.models import LoopStatus

# When this process loaded the loop checks: the reference of a loop that has no completed run.
PROCESS_STARTED_AT = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LoopState:
    name: str
    period_s: float
    max_lag_s: float
    # Seconds since the last completed run; for a loop without one, since this process started.
    lag_s: float
    stalled: bool
    succeeded_at: dt.datetime | None
    # The latest run, completed or not (None: the loop never ran against this database).
    finished_at: dt.datetime | None
    duration_s: float | None
    done: int | None
    steps: int | None
    error: str  # the latest run's exception; empty after a run that completed

    @property
    def never_succeeded(self) -> bool:
        return self.succeeded_at is None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "period_s": self.period_s,
            "max_lag_s": self.max_lag_s,
            "lag_s": self.lag_s,
            "stalled": self.stalled,
            "succeeded_at": self.succeeded_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "done": self.done,
            "steps": self.steps,
            "error": self.error,
        }


def expected_loops() -> dict[str, dict[str, float]]:
    """The loops this deployment runs, with their periods and allowed lags, in table order."""
    return dict(settings.AILURO_LOOPS)


def loop_states(*, now: dt.datetime | None = None, started_at: dt.datetime | None = None) -> list[LoopState]:
    """Every loop of the table with its latest run and whether it is stalled, in table order; one
    query. Rows of loops no longer in the table are ignored. `now` and `started_at` (this process's
    start) default to the clock and `PROCESS_STARTED_AT`."""
    loops = expected_loops()
    if not loops:
        return []
    now = now or timezone.now()
    started_at = started_at or PROCESS_STARTED_AT
    grace_s = float(settings.AILURO_LOOP_GRACE_S)
    rows = {row.name: row for row in LoopStatus.objects.filter(name__in=list(loops))}
    states = []
    for name, spec in loops.items():
        row = rows.get(name)
        max_lag_s = float(spec["max_lag_s"])
        succeeded_at = row.succeeded_at if row else None
        if succeeded_at is not None:
            lag_s = (now - succeeded_at).total_seconds()
            stalled = lag_s > max_lag_s
        else:
            lag_s = (now - started_at).total_seconds()
            stalled = lag_s > max_lag_s + grace_s
        states.append(
            LoopState(
                name=name,
                period_s=float(spec["period_s"]),
                max_lag_s=max_lag_s,
                lag_s=round(max(lag_s, 0.0), 1),
                stalled=stalled,
                succeeded_at=succeeded_at,
                finished_at=row.finished_at if row else None,
                duration_s=row.duration_s if row else None,
                done=row.done if row else None,
                steps=row.steps if row else None,
                error=row.error if row else "",
            )
        )
    return states
