"""Retry decisions: which failed attempts come back, with how much memory, after how long.

Pure logic over plain data (docs/contributing.md#shape-of-the-code): `retry_decide` takes the attempt's errors and the active
rules and returns a decision; `dispatcher.services.attempts.job_attempt_end` applies it. Rules are
RetryRule rows, editable in admin; `retry_rules_active` loads them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
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
    action: str  # retry | increase_memory | increase_walltime | no_retry
    reason: str
    memory_mb: int | None = None  # new request when the memory is raised
    backoff_s: int = 0
    walltime_s: int | None = None  # new request when the walltime is raised

    @property
    def retries(self) -> bool:
        return self.action != "no_retry"


@dataclass(frozen=True)
class ResizePolicy:
    """How an out-of-memory retry sizes its request from the failed attempt's measured peak RSS
    (settings `AILURO_OOM_RETRY_MARGIN`, `_ROUND_MB`, `_STEP_MB`)."""

    margin: float = 1.25  # the request is the measured peak × margin …
    round_mb: int = 100  # … rounded up to a multiple of this …
    step_mb: int = 500  # … and at least the previous request + this


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


def memory_request(
    rule: Rule,
    *,
    memory_mb: int,
    max_memory_mb: int,
    measured_rss_kb: int | None,
    policy: ResizePolicy,
) -> tuple[int, str]:
    """The next memory request of an out-of-memory retry and how it was reached (the words shown
    on the job page).

    With a measured peak RSS: peak × margin rounded up to `round_mb`, at least the previous
    request + `step_mb`, at most the task's cap. RSS, not PSS: the pilot and the batch systems
    kill on RSS and brokerage matches the queues' `max_rss_mb`, so a request sized on PSS (shared
    pages counted in part) can be too small for the same limit again. Without a measurement: the
    previous request × the rule's factor (default 2), at most the cap.
    """
    if measured_rss_kb:
        measured_mb = math.ceil(measured_rss_kb / 1024)
        wanted = math.ceil(round(measured_mb * policy.margin, 6) / policy.round_mb) * policy.round_mb
        how = (
            f"measured {measured_mb} MB × {policy.margin:g}, rounded up to a multiple of {policy.round_mb} MB"
        )
        floor = memory_mb + policy.step_mb
        if wanted < floor:
            wanted = floor
            how = (
                f"previous {memory_mb} MB + {policy.step_mb} MB (measured {measured_mb} MB"
                f" × {policy.margin:g} is less)"
            )
    else:
        factor = float(str(rule.params.get("factor", 2)))
        wanted = int(memory_mb * factor)
        how = f"previous {memory_mb} MB × {factor:g} (no measured peak)"
    if wanted > max_memory_mb:
        return max_memory_mb, f"the task's cap of {max_memory_mb} MB ({how} = {wanted} MB)"
    return wanted, how


def retry_decide(
    *,
    errors: Mapping[str, object],
    rules: Sequence[Rule],
    label: str,
    attemptnr: int,
    max_attempts: int,
    memory_mb: int,
    max_memory_mb: int,
    measured_rss_kb: int | None = None,
    policy: ResizePolicy | None = None,
    walltime_s: int = 0,
    max_walltime_s: int | Callable[[], int] = 0,
) -> RetryDecision:
    """Decide what happens after a failed attempt.

    1. The first rule (in order) matching the attempt's errors decides the action; no matching rule
       means no retry, so an unknown failure never burns cores repeatedly.
    2. No attempts left (attemptnr >= max_attempts) → no retry, whatever the rule said.
    3. increase_memory: the request from the attempt's measured peak RSS (`memory_request`), or
       memory × factor without a measurement; capped at the task's max; already at the cap → no
       retry.
    4. increase_walltime: walltime × factor (default 2), capped at `max_walltime_s` (the longest a
       queue that can take jobs allows; a callable is asked only for this action); already there
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
        new_memory, how = memory_request(
            rule,
            memory_mb=memory_mb,
            max_memory_mb=max_memory_mb,
            measured_rss_kb=measured_rss_kb,
            policy=policy or ResizePolicy(),
        )
        if new_memory <= memory_mb:
            return RetryDecision(
                "no_retry", f"rule {rule.name}: out of memory at the cap of {max_memory_mb} MB"
            )
        return RetryDecision(
            "increase_memory",
            f"rule {rule.name}: retry asks {new_memory} MB = {how}; was {memory_mb} MB",
            memory_mb=new_memory,
            backoff_s=backoff,
        )
    if rule.action == "increase_walltime":
        factor = float(str(rule.params.get("factor", 2)))
        wanted = int(walltime_s * factor)
        if callable(max_walltime_s):
            max_walltime_s = max_walltime_s()
        new_walltime = min(wanted, max_walltime_s)
        if new_walltime <= walltime_s:
            return RetryDecision(
                "no_retry",
                f"rule {rule.name}: walltime {walltime_s} s is already the longest a queue allows"
                f" ({max_walltime_s} s)",
            )
        capped = f", the longest a queue allows ({walltime_s} s × {factor:g} = {wanted} s)"
        how = capped if new_walltime < wanted else f" = {walltime_s} s × {factor:g}"
        return RetryDecision(
            "increase_walltime",
            f"rule {rule.name}: retry asks {new_walltime} s of walltime{how}",
            walltime_s=new_walltime,
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


# The default rules (editable in admin afterwards; docs/operator-guide/retries.md lists them).
# Codes: pilot3's `pilot/common/errorcodes.py` (`ailuro.protocol`); jobdispatcher codes set by the
# watcher (`dispatcher.loops`). Migration 0002 seeds RULES_SEEDED_0002, migration 0007 adds
# RULES_SEEDED_0007 and widens the connection patterns of rows still holding the 0002 ones; a
# later change of these defaults needs a data migration of its own.
_BACKOFF = {"backoff_s": 60}
DB_ERRORS_0002 = (
    r"could not connect to server|connection (refused|reset|timed out)|server closed the connection"
    r"|terminating connection|database is locked|OperationalError"
)
# Database blips, as the payload's traceback words them: SQLAlchemy and psycopg (2 and 3)
# operational errors, a refused or dropped connection, a database restarting or out of connection
# slots. Network failures have a rule of their own (a diag_regex holds 300 characters).
_DB_ERRORS = (
    r"could not connect to server|connection (refused|reset|timed out|aborted)"
    r"|server closed the connection|terminating connection|database is locked|OperationalError"
    r"|the database system is (starting up|shutting down|in recovery mode)"
    r"|too many clients already|remaining connection slots are reserved"
)
_NETWORK_ERRORS = (
    r"Connection(Refused|Reset|Aborted)Error|Network is unreachable|No route to host"
    r"|Temporary failure in name resolution|Name or service not known"
    r"|Failed to establish a new connection"
)
_OOM_DIAG = r"out of memory|out-of-memory|oom[- ]?kill|memory limit|std::bad_alloc|MemoryError"
RULES_SEEDED_0002: tuple[dict[str, object], ...] = (
    # Transient: the node, the network or the batch system failed, not the payload.
    {
        "name": "lost-heartbeat",
        "error_family": "jobdispatcher",
        "code": 100,
        "action": "retry",
        "params": _BACKOFF,
        "order": 10,
        "description": "No heartbeat for the queue's timeout (watcher): the node or the pilot died.",
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
    # Out of memory: retry asking the measured peak × AILURO_OOM_RETRY_MARGIN (twice the memory
    # when nothing was measured), up to the task's cap; brokerage then picks a queue whose max RSS
    # fits.
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
    # Database and network blips seen by the payload or by the server's bookkeeping: retry later.
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
RULES_SEEDED_0007: tuple[dict[str, object], ...] = (
    {
        "name": "walltime-exceeded",
        "error_family": "pilot",
        "code": 1213,
        "action": "increase_walltime",
        "params": {"factor": 2},
        "order": 25,
        "description": "Pilot stopped the payload at its walltime: retry with twice the walltime, "
        "up to the longest a queue allows.",
    },
    {
        "name": "network-exe",
        "error_family": "exe",
        "diag_regex": _NETWORK_ERRORS,
        "action": "retry",
        "params": {"backoff_s": 300},
        "order": 42,
        "description": "Payload lost its network connection (refused, reset, no route, DNS).",
    },
)
DEFAULT_RULES: tuple[dict[str, object], ...] = tuple(
    sorted((*RULES_SEEDED_0002, *RULES_SEEDED_0007), key=lambda rule: int(str(rule["order"])))
)
