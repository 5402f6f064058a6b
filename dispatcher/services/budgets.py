"""Failure budgets (docs/user-guide/workflows.md#failure-budgets): a task whose failed attempts
used more core-hours than its label allows is paused, with the reason on the task.

`failure_budgets_check` is the `budgets` loop's step (config/loops.py). Set-based and cheap: it
looks only at tasks with a failed attempt ended in the last `lookback_s` (the attempts' endtime
index), sums the core-seconds (whole seconds of walltime × requested cores) of their attempts since
each task's `budget_since` in one GROUP BY, and pauses the ones over budget through
`workflow_actions.task_budget_pause`. A campaign's advancer tells the campaign's webhook
(campaigns/advance.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils import timezone

from dispatcher.models import JobAttempt, Task
from dispatcher.queries import CoreUse, tasks_core_use
from dispatcher.services.workflow_actions import paused_tasks_hold, task_budget_pause
from dispatcher.states import TASK_FINAL, JobStatus, TaskStatus

DEFAULT_MIN_ATTEMPTS = 10
# Every budget pause reason starts so (the campaign advancer finds the pauses to notify by it).
BUDGET_REASON_PREFIX = "failure budget exceeded"


def budget_default() -> dict[str, Any] | None:
    """The site's budget for labels that set none (AILURO_FAILURE_BUDGET_*): None when off."""
    cfg = settings.AILURO
    budget: dict[str, Any] = {}
    if float(cfg.get("FAILURE_BUDGET_CORE_HOURS", 0)) > 0:
        budget["core_hours"] = float(cfg["FAILURE_BUDGET_CORE_HOURS"])
    if float(cfg.get("FAILURE_BUDGET_FRACTION", 0)) > 0:
        budget["fraction"] = float(cfg["FAILURE_BUDGET_FRACTION"])
    if not budget:
        return None
    budget["min_attempts"] = int(cfg.get("FAILURE_BUDGET_MIN_ATTEMPTS", DEFAULT_MIN_ATTEMPTS))
    return budget


def budget_of(own: Any, default: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The budget a task runs under: its label's, none when the label switched it off, else the
    site's default."""
    if own is False:
        return None
    if isinstance(own, Mapping) and own:
        return own
    return default


def budget_exceeded(budget: Mapping[str, Any], use: CoreUse) -> str | None:
    """Why `use` is over `budget`, or None (pure). Core-hours: more failed core-hours than allowed,
    whatever the sample. Fraction: failed core-hours over that share of all core-hours, once at
    least `min_attempts` attempts ended (one early failure is not a trend)."""
    failed_h = use.failed_core_s / 3600
    total_h = use.total_core_s / 3600
    limit = budget.get("core_hours")
    if limit is not None and failed_h > float(limit):
        return (
            f"{BUDGET_REASON_PREFIX}: {use.failed} failed attempts used {failed_h:.3f} core-hours "
            f"(budget {float(limit):g} core-hours)"
        )
    fraction = budget.get("fraction")
    min_attempts = int(budget.get("min_attempts", DEFAULT_MIN_ATTEMPTS))
    if fraction is not None and use.attempts >= min_attempts and use.total_core_s > 0:
        share = use.failed_core_s / use.total_core_s
        if share > float(fraction):
            return (
                f"{BUDGET_REASON_PREFIX}: {use.failed} of {use.attempts} attempts failed, "
                f"{failed_h:.3f} of {total_h:.3f} core-hours ({share:.0%}; budget {float(fraction):.0%})"
            )
    return None


def failure_budgets_check(*, lookback_s: int = 3600, now: dt.datetime | None = None) -> int:
    """Pause the running tasks over their failure budget; returns how many were paused.

    1. Candidates: tasks neither ended nor paused with a failed attempt ended in the last
       `lookback_s` (a task over budget has one: its budget was crossed by a failure).
    2. Their budgets (label's, or the site default); none → not checked.
    3. Their use since `budget_since` (`dispatcher.queries.tasks_core_use`), judged by `budget_exceeded`.
    4. Each task over budget: `task_budget_pause` (locks the workflow, rechecks the state).

    First, `paused_tasks_hold` takes back any job a racing brokerage run activated for a task
    paused meanwhile.
    """
    now = now or timezone.now()
    paused_tasks_hold()
    default = budget_default()
    recent = (
        JobAttempt.objects.filter(
            endtime__gte=now - dt.timedelta(seconds=lookback_s), jobstatus=JobStatus.FAILED
        )
        .order_by()
        .values("job__task_id")
        .distinct()
    )
    candidates = {
        tid: budget_of(own, default)
        for tid, own in Task.objects.filter(jeditaskid__in=recent)
        .exclude(status__in=[*TASK_FINAL, TaskStatus.PAUSED])
        .values_list("jeditaskid", "failure_budget")
    }
    budgets = {tid: b for tid, b in candidates.items() if b}
    if not budgets:
        return 0
    paused = 0
    for tid, use in sorted(tasks_core_use(list(budgets)).items()):
        reason = budget_exceeded(budgets[tid], use.since_resume())
        if reason and task_budget_pause(jeditaskid=tid, reason=reason):
            paused += 1
    return paused
