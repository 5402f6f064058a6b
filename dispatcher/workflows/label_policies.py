"""Two per-label settings of a spec, checked here (pure): the failure budget and learned requests
(docs/user-guide/workflows.md#failure-budgets, #learned-requests). Workflow specs take them under
`labels.<label>`, campaign specs on a pipeline label or for every label; tasks store what these
functions return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatcher.workflows.dag import WorkflowInvalid

BUDGET_KEYS = frozenset({"core_hours", "fraction", "min_attempts"})
LEARN_KEYS = frozenset({"percentile", "margin", "min_samples"})
LEARN_DEFAULTS: dict[str, Any] = {"percentile": 95, "margin": 1.2, "min_samples": 20}


def _number(value: Any, where: str, *, low: float, high: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        ok = ok and isinstance(value, int)
    if not ok or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        kind = "an integer" if integer else "a number"
        raise WorkflowInvalid(f"{where} must be {kind} {bound}, got {value!r}", field=where)
    return value


def failure_budget_parse(raw: Any, where: str) -> dict[str, Any] | bool | None:
    """A label's `failure_budget`: None (not given: the site's default applies), False (off), or
    {core_hours?, fraction?, min_attempts?} with at least one limit. `core_hours` > 0 pauses the
    task once its failed attempts since the last resume used more core-hours than that; `fraction`
    in (0, 1] once they used more than that share of all its attempts' core-hours, counted only
    from `min_attempts` ended attempts on (default 10)."""
    if raw is None:
        return None
    if raw is False:
        return False
    if not isinstance(raw, Mapping):
        raise WorkflowInvalid(f"{where} must be a mapping or false", field=where)
    unknown = sorted(set(raw) - BUDGET_KEYS)
    if unknown:
        raise WorkflowInvalid(
            f"{where} has unknown key {unknown[0]!r} (allowed: {', '.join(sorted(BUDGET_KEYS))})", field=where
        )
    out: dict[str, Any] = {}
    if raw.get("core_hours") is not None:
        out["core_hours"] = float(_number(raw["core_hours"], f"{where}.core_hours", low=0.0))
        if out["core_hours"] <= 0:
            raise WorkflowInvalid(f"{where}.core_hours must be more than 0", field=f"{where}.core_hours")
    if raw.get("fraction") is not None:
        out["fraction"] = float(_number(raw["fraction"], f"{where}.fraction", low=0.0, high=1.0))
        if out["fraction"] <= 0:
            raise WorkflowInvalid(f"{where}.fraction must be more than 0", field=f"{where}.fraction")
    if raw.get("min_attempts") is not None:
        out["min_attempts"] = int(_number(raw["min_attempts"], f"{where}.min_attempts", low=1, integer=True))
    if "core_hours" not in out and "fraction" not in out:
        raise WorkflowInvalid(
            f"{where} needs core_hours or fraction (or false to switch it off)", field=where
        )
    return out


def learn_requests_parse(raw: Any, where: str) -> dict[str, Any] | None:
    """A label's `learn_requests`: None or false (off), true (the defaults), or {percentile 50–100,
    margin ≥ 1, min_samples ≥ 1}, the missing keys taken from the defaults."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return dict(LEARN_DEFAULTS)
    if not isinstance(raw, Mapping):
        raise WorkflowInvalid(f"{where} must be true, false or a mapping", field=where)
    unknown = sorted(set(raw) - LEARN_KEYS)
    if unknown:
        raise WorkflowInvalid(
            f"{where} has unknown key {unknown[0]!r} (allowed: {', '.join(sorted(LEARN_KEYS))})", field=where
        )
    out = dict(LEARN_DEFAULTS)
    if "percentile" in raw:
        out["percentile"] = float(_number(raw["percentile"], f"{where}.percentile", low=50, high=100))
    if "margin" in raw:
        out["margin"] = float(_number(raw["margin"], f"{where}.margin", low=1.0, high=10.0))
    if "min_samples" in raw:
        out["min_samples"] = int(_number(raw["min_samples"], f"{where}.min_samples", low=1, integer=True))
    return out
