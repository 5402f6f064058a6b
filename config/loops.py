"""The loops, in one table: Celery beat and its tasks (`config/celery.py`) and the Celery-free
runners (`manage.py run_loops`, `manage.py run_local_pilots`) all read it (docs/architecture.md#loops).

Each entry names a one-step function (bounded work, returns how much, safe to run twice) and how
it is run: every `period_s` seconds, under the lease `loop:<name>`, repeating the step while it
finds work for at most `budget_s` seconds, within Celery time limits. `Loop.run` hands it to
`core.loops.loop_run`, which also records every run in `core.LoopStatus`.

This module is imported while Django starts (`config/__init__.py` imports the Celery app), so it
names the steps by dotted path and imports them only when a loop runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from django.utils.module_loading import import_string

# The soft time limit comes this long before the hard one, so a step that overruns gets an
# exception it can unwind from (and the run is recorded as failed) before the process is killed;
# the lease outlives the hard limit by as much, so a killed run is never joined by a second one.
LIMIT_MARGIN_S = 30.0


@dataclass(frozen=True)
class Loop:
    name: str
    step: str  # dotted path of the one-step function: step(**kwargs) -> work done
    period_s: float  # beat interval; a tick that waited in the queue longer is dropped
    budget_s: float  # repeat the step while it fills its batch, this long at most (0: once a run)
    time_limit_s: float  # Celery's hard limit for one run
    task: str  # the Celery task name, as deployed beats and workers know it

    @property
    def lease(self) -> str:
        return f"loop:{self.name}"

    @property
    def soft_time_limit_s(self) -> float:
        return self.time_limit_s - LIMIT_MARGIN_S

    @property
    def lease_ttl_s(self) -> float:
        return self.time_limit_s + LIMIT_MARGIN_S

    def max_lag_s(self, factor: float) -> float:
        """How long after its last completed run the loop counts as stalled (readiness and the
        monitor's loop strip, decision 0007): `factor` periods, so a busy pool may drop a tick or
        two (beat's ticks expire after one period in the queue), but never less than a period plus
        the hard time limit, since a run records its success only when it ends and may last that
        long (the campaign advancer's 300 s against its 30 s period)."""
        return max(factor * self.period_s, self.period_s + self.time_limit_s)

    def step_function(self) -> Callable[..., int]:
        return cast("Callable[..., int]", import_string(self.step))

    def run(self, **kwargs: Any) -> int | None:
        """One run under the loop's lease: the work done, or None when the lease is held elsewhere.
        `kwargs` go to the step (tests bound it with `limit=`; run_local_pilots passes its own
        provisioner `config=`)."""
        from core.loops import loop_run  # needs the models, which exist once Django has started

        return loop_run(
            name=self.name,
            lease=self.lease,
            step=self.step_function(),
            ttl_s=self.lease_ttl_s,
            budget_s=self.budget_s,
            **kwargs,
        )


# A step that fills its batch (a backlog) is repeated within its run for up to this long: a 5 s
# period with a 2,000-job step would otherwise cap brokerage at 400 jobs/s. Well below the time
# limits.
BUDGET_S = 20.0

_TABLE: tuple[Loop, ...] = (
    # Released jobs wait for brokerage before a pilot can get them: seconds matter for short DAG
    # levels, and one bounded step is cheap when there is nothing to do (one indexed query).
    Loop(
        name="brokerage",
        step="dispatcher.services.broker_one_batch",
        period_s=5.0,
        budget_s=BUDGET_S,
        time_limit_s=90,
        task="dispatcher.loop_brokerage",
    ),
    # Timeouts are 30 min (sent), 2 h (heartbeat) and 3 h (holding): a minute of lateness is noise,
    # and the watcher scans an index of in-flight jobs.
    Loop(
        name="watcher",
        step="dispatcher.loops.watcher_one_batch",
        period_s=60.0,
        budget_s=BUDGET_S,
        time_limit_s=90,
        task="dispatcher.loop_watcher",
    ),
    # Task and workflow states feed the monitor and the campaign advancer; 10 s keeps pages fresh
    # while folding deltas in batches (counts are exact at any time without the fold).
    Loop(
        name="rollup",
        step="dispatcher.loops.rollup_one_batch",
        period_s=10.0,
        budget_s=BUDGET_S,
        time_limit_s=90,
        task="dispatcher.loop_rollup",
    ),
    # The monitor's per-hour rollups (decision 0003): pages are exact without the fold (they read
    # the unfolded deltas too), so 10 s only bounds how many deltas a page has to add up.
    Loop(
        name="monitor",
        step="pandamon.rollups.monitor_one_batch",
        period_s=10.0,
        budget_s=BUDGET_S,
        time_limit_s=90,
        task="pandamon.loop_monitor",
    ),
    # Pilots take minutes to start on a batch system; submitting, polling and cleaning workers every
    # 30 s keeps queues filled without hammering sbatch/sacct. One round a run: each round submits
    # up to the queues' limits already.
    Loop(
        name="provisioner",
        step="harvester.provisioning.provision_one_round",
        period_s=30.0,
        budget_s=0,
        time_limit_s=120,
        task="harvester.provision",
    ),
    # Campaign groups take minutes to hours; judging them, submitting the next ones and flagging
    # stalls every 30 s is prompt enough. One round a run, so AILURO_CAMPAIGN_SUBMIT_PER_ROUND
    # bounds the submissions of each period.
    Loop(
        name="campaigns",
        step="campaigns.advance.campaigns_advance_one_round",
        period_s=30.0,
        budget_s=0,
        time_limit_s=300,
        task="campaigns.advance",
    ),
    # Failure budgets: a task over budget keeps burning core-hours until paused, so a minute;
    # one GROUP BY over the tasks with a failure in the last hour (dispatcher/services/budgets.py).
    Loop(
        name="budgets",
        step="dispatcher.loops.budgets_one_batch",
        period_s=60.0,
        budget_s=0,
        time_limit_s=90,
        task="dispatcher.loop_budgets",
    ),
    # Learned requests: once per task, when enough of its attempts were measured.
    Loop(
        name="requests",
        step="dispatcher.loops.requests_one_batch",
        period_s=60.0,
        budget_s=0,
        time_limit_s=90,
        task="dispatcher.loop_requests",
    ),
    # Archiving and trimming are about disk space, measured in days.
    Loop(
        name="janitor",
        step="dispatcher.loops.janitor_one_batch",
        period_s=3600.0,
        budget_s=BUDGET_S,
        time_limit_s=90,
        task="dispatcher.loop_janitor",
    ),
    # Users' cache files (prun and `bps submitcmd` sandboxes) expire after
    # AILURO_PANDA_CACHE_KEEP_DAYS, which gives their quota back; an hour of lateness is nothing.
    Loop(
        name="cache_expiry",
        step="pandacompat.cache.cache_files_expire",
        period_s=3600.0,
        budget_s=BUDGET_S,
        time_limit_s=90,
        task="pandacompat.loop_cache_expiry",
    ),
)

PERIODS_ENV = "AILURO_LOOP_PERIODS"


def periods_override(loops: tuple[Loop, ...], raw: str) -> tuple[Loop, ...]:
    """The table with the periods of `raw` (`name=seconds,name=seconds`, the value of
    AILURO_LOOP_PERIODS) in place of its own; an unknown loop or a period that is not a number of at
    least 0.5 s is a ValueError naming it. Tests and small sites shorten periods this way (a test
    campaign advancing every 2 s rather than 30 s); beat, the Celery-free runner and the loops'
    health all read the result."""
    wanted: dict[str, float] = {}
    names = {loop.name for loop in loops}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or name not in names:
            raise ValueError(
                f"{PERIODS_ENV}: {item!r} is not <loop>=<seconds> with one of {', '.join(sorted(names))}"
            )
        try:
            period = float(value)
        except ValueError:
            period = -1.0
        if not period >= 0.5:
            raise ValueError(f"{PERIODS_ENV}: the period of {name} must be a number of seconds >= 0.5")
        wanted[name] = period
    return tuple(replace(loop, period_s=wanted[loop.name]) if loop.name in wanted else loop for loop in loops)


LOOPS: tuple[Loop, ...] = periods_override(_TABLE, os.environ.get(PERIODS_ENV, ""))


def loop_named(name: str) -> Loop:
    """The table's entry `name`; an unknown name is a ValueError that lists the loops."""
    for loop in LOOPS:
        if loop.name == name:
            return loop
    raise ValueError(f"unknown loop {name!r}; the loops are {', '.join(loop.name for loop in LOOPS)}")
