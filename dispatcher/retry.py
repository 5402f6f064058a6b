"""Retry decisions: which failed attempts come back, with how much memory, after how long.

Pure logic over plain data (STYLE §7): `retry_decide` takes the attempt's errors and the active
rules and returns a decision; `dispatcher.services.attempts.job_attempt_end` applies it. Rules are
RetryRule rows, editable in admin; `retry_rules_active` loads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The error families of DESIGN §8 → (code column, diag column) on Job / JobAttempt.
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
