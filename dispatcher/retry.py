"""Retry decisions: which failed attempts come back, with how much memory, after how long.

Pure logic over plain data (docs/contributing.md#shape-of-the-code): `retry_decide` takes the attempt's errors and the active
rules and returns a decision; `dispatcher.services.attempts.job_attempt_end` applies it. Rules are
RetryRule rows, editable in admin; `retry_rules_active` loads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The error families (docs/architecture.md#errors-and-logs) → (code column, diag column) on Job / JobAttempt.
FAMILY_COLUMNS: dict[str, tuple[str, str | None]] = {
    "pilot": ("piloterrorcode", "piloterrordiag"),
    "exe": ("exeerrorcode", "exeerrordiag"),
    "trans": ("transexitcode", None),
    "jobdispatcher": ("jobdispatchererrorcode", "jobdispatchererrordiag"),
    "ddm": ("ddmerrorcode", "ddmerrordiag"),
    "sup": ("superrorcode", "superrordiag"),
    "taskbuffer": ("taskbuffererrorcode", "taskbuffererrordiag"),
}
ERROR_FIELDS: frozenset[str] = frozenset(col for pair in FAMILY_COLUMNS.values() for col in pair if col)


@dataclass(frozen=True)
class Rule:
    """A RetryRule row as plain data."""

    name: str
    error_family: str
    action: str  # retry | increase_memory | no_retry
    code: int | None = None
    code_max: int | None = None
    diag_regex: str = ""
    scope_label: str = ""
    params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryDecision:
    action: str  # retry | increase_memory | no_retry
    reason: str
    memory_mb: int | None = None  # new request when the memory is raised
    backoff_s: int = 0

    @property
    def retries(self) -> bool:
        return self.action != "no_retry"


def _matches(rule: Rule, errors: Mapping[str, object], label: str) -> bool:
    if rule.scope_label and rule.scope_label != label:
        return False
    code_col, diag_col = FAMILY_COLUMNS[rule.error_family]
    code = int(str(errors.get(code_col) or 0))
    diag = str(errors.get(diag_col) or "") if diag_col else ""
    if rule.code is None:
        if code == 0 and not (rule.diag_regex and diag):
            return False
    elif rule.code_max is None:
        if code != rule.code:
            return False
    elif not rule.code <= code <= rule.code_max:
        return False
    return not (rule.diag_regex and not re.search(rule.diag_regex, diag, re.IGNORECASE))


def retry_decide(
    *,
    errors: Mapping[str, object],
    rules: Sequence[Rule],
    label: str,
    attemptnr: int,
    max_attempts: int,
    memory_mb: int,
    max_memory_mb: int,
) -> RetryDecision:
    """Decide what happens after a failed attempt.

    1. The first rule (in order) matching the attempt's errors decides the action; no matching rule
       means no retry, so an unknown failure never burns cores repeatedly.
    2. No attempts left (attemptnr >= max_attempts) → no retry, whatever the rule said.
    3. increase_memory: memory × factor (default 2), capped at the task's max; already at the cap
       → no retry.
    """
    rule = next((r for r in rules if _matches(r, errors, label)), None)
    if rule is None:
        return RetryDecision("no_retry", "no retry rule matches these errors")
    if rule.action == "no_retry":
        return RetryDecision("no_retry", f"rule {rule.name}: deterministic error")
    if attemptnr >= max_attempts:
        return RetryDecision(
            "no_retry",
            f"rule {rule.name} would retry, but attempt {attemptnr} of {max_attempts} was the last",
        )
    backoff = int(str(rule.params.get("backoff_s", 0)))
    if rule.action == "increase_memory":
        factor = float(str(rule.params.get("factor", 2)))
        new_memory = min(int(memory_mb * factor), max_memory_mb)
        if new_memory <= memory_mb:
            return RetryDecision(
                "no_retry", f"rule {rule.name}: out of memory at the cap of {max_memory_mb} MB"
            )
        return RetryDecision(
            "increase_memory",
            f"rule {rule.name}: memory {memory_mb} → {new_memory} MB",
            memory_mb=new_memory,
            backoff_s=backoff,
        )
    return RetryDecision("retry", f"rule {rule.name}: transient error", backoff_s=backoff)


def retry_rules_active() -> list[Rule]:
    """The active RetryRule rows, in order, as plain data."""
    from dispatcher.models import RetryRule

    return [
        Rule(
            name=r.name,
            error_family=r.error_family,
            action=r.action,
            code=r.code,
            code_max=r.code_max,
            diag_regex=r.diag_regex,
            scope_label=r.scope_label,
            params=r.params or {},
        )
        for r in RetryRule.objects.filter(active=True).order_by("order", "id")
    ]


# The rules seeded by migration 0002 (editable in admin afterwards; docs/operator-guide/retries.md
# lists them). Codes: pilot3's `pilot/common/errorcodes.py`; jobdispatcher codes set by the watcher
# (`dispatcher.loops`). A later change of these defaults needs a new data migration.
_BACKOFF = {"backoff_s": 60}
_DB_ERRORS = (
    r"could not connect to server|connection (refused|reset|timed out)|server closed the connection"
    r"|terminating connection|database is locked|OperationalError"
)
_OOM_DIAG = r"out of memory|out-of-memory|oom[- ]?kill|memory limit|std::bad_alloc|MemoryError"
DEFAULT_RULES: tuple[dict[str, object], ...] = (
    # Transient: the node, the network or the batch system failed, not the payload.
    {
        "name": "lost-heartbeat",
        "error_family": "jobdispatcher",
        "code": 100,
        "action": "retry",
        "params": _BACKOFF,
        "order": 10,
        "description": "No heartbeat for the queue's timeout (watcher).",
    },
    {
        "name": "sent-no-reply",
        "error_family": "jobdispatcher",
        "code": 102,
        "action": "retry",
        "params": _BACKOFF,
        "order": 11,
        "description": "Sent to a pilot that never replied (watcher).",
    },
    {
        "name": "preempted",
        "error_family": "pilot",
        "code": 1379,
        "action": "retry",
        "params": _BACKOFF,
        "order": 20,
        "description": "The batch system preempted the pilot.",
    },
    {
        "name": "killed-by-signal",
        "error_family": "pilot",
        "code": 1200,
        "code_max": 1208,
        "action": "retry",
        "params": _BACKOFF,
        "order": 21,
        "description": "The payload got a signal (SIGTERM, SIGQUIT, …).",
    },
    # Out of memory: retry with twice the memory, up to the task's cap; brokerage then picks a queue
    # whose max RSS fits.
    {
        "name": "oom-pilot",
        "error_family": "pilot",
        "code": 1212,
        "action": "increase_memory",
        "params": {"factor": 2},
        "order": 30,
        "description": "Pilot: payload exceeded its memory.",
    },
    {
        "name": "oom-pilot-rss",
        "error_family": "pilot",
        "code": 1235,
        "action": "increase_memory",
        "params": {"factor": 2},
        "order": 31,
        "description": "Pilot: RSS above the queue's limit.",
    },
    {
        "name": "oom-exit-137",
        "error_family": "trans",
        "code": 137,
        "action": "increase_memory",
        "params": {"factor": 2},
        "order": 32,
        "description": "Exit code 137: SIGKILL, usually the OOM killer.",
    },
    {
        "name": "oom-diag-pilot",
        "error_family": "pilot",
        "diag_regex": _OOM_DIAG,
        "action": "increase_memory",
        "params": {"factor": 2},
        "order": 33,
        "description": "Pilot diag says out of memory.",
    },
    {
        "name": "oom-diag-exe",
        "error_family": "exe",
        "diag_regex": _OOM_DIAG,
        "action": "increase_memory",
        "params": {"factor": 2},
        "order": 34,
        "description": "Payload diag says out of memory.",
    },
    # Database blips seen by the payload or by the server's bookkeeping: retry later.
    {
        "name": "database-connection-exe",
        "error_family": "exe",
        "diag_regex": _DB_ERRORS,
        "action": "retry",
        "params": {"backoff_s": 300},
        "order": 40,
        "description": "Payload lost its database connection.",
    },
    {
        "name": "database-connection-taskbuffer",
        "error_family": "taskbuffer",
        "diag_regex": _DB_ERRORS,
        "action": "retry",
        "params": {"backoff_s": 300},
        "order": 41,
        "description": "Server lost its database connection while recording the job.",
    },
    # Deterministic: the payload itself failed; running it again fails again and wastes cores.
    {
        "name": "payload-error",
        "error_family": "trans",
        "action": "no_retry",
        "order": 900,
        "description": "Non-zero payload exit code not matched above.",
    },
    {
        "name": "execution-error",
        "error_family": "exe",
        "action": "no_retry",
        "order": 901,
        "description": "Execution error not matched above.",
    },
    {
        "name": "pilot-error",
        "error_family": "pilot",
        "action": "no_retry",
        "order": 902,
        "description": "Pilot error not matched above.",
    },
)
