from __future__ import annotations

from dispatcher.retry import Rule, retry_decide

RULES = [
    Rule(name="oom-pilot", error_family="pilot", code=1212, action="increase_memory", params={"factor": 2}),
    Rule(
        name="oom-diag",
        error_family="exe",
        diag_regex="out of memory|std::bad_alloc",
        action="increase_memory",
    ),
    Rule(
        name="signals",
        error_family="pilot",
        code=1200,
        code_max=1208,
        action="retry",
        params={"backoff_s": 30},
    ),
    Rule(name="isr-only", error_family="trans", code=65, scope_label="isr", action="retry"),
    Rule(name="user-error", error_family="trans", action="no_retry"),
]


def _decide(errors: dict[str, object], **kw: object) -> object:
    args: dict[str, object] = {
        "label": "calibrate",
        "attemptnr": 1,
        "max_attempts": 3,
        "memory_mb": 4000,
        "max_memory_mb": 16000,
    }
    args.update(kw)
    return retry_decide(errors=errors, rules=RULES, **args)  # type: ignore[arg-type]


def test_out_of_memory_doubles_memory_up_to_the_cap() -> None:
    d = _decide({"piloterrorcode": 1212})
    assert (d.action, d.memory_mb) == ("increase_memory", 8000)  # type: ignore[attr-defined]
    d = _decide({"piloterrorcode": 1212}, memory_mb=12000)
    assert d.memory_mb == 16000  # type: ignore[attr-defined]
    d = _decide({"piloterrorcode": 1212}, memory_mb=16000)
    assert d.action == "no_retry" and "cap" in d.reason  # type: ignore[attr-defined]


def test_diag_regex_is_case_insensitive_and_family_scoped() -> None:
    assert (
        _decide({"exeerrorcode": 1, "exeerrordiag": "Fatal: OUT OF MEMORY in step"}).action
        == "increase_memory"
    )  # type: ignore[attr-defined]
    assert _decide({"piloterrorcode": 1, "piloterrordiag": "out of memory"}).action == "no_retry"  # type: ignore[attr-defined]


def test_code_ranges_backoff_and_label_scope() -> None:
    d = _decide({"piloterrorcode": 1205})
    assert (d.action, d.backoff_s) == ("retry", 30)  # type: ignore[attr-defined]
    assert _decide({"piloterrorcode": 1209}).action == "no_retry"  # type: ignore[attr-defined]
    assert _decide({"transexitcode": 65}, label="isr").action == "retry"  # type: ignore[attr-defined]
    assert _decide({"transexitcode": 65}).reason.startswith("rule user-error")  # type: ignore[attr-defined]


def test_no_rule_and_last_attempt_mean_no_retry() -> None:
    assert _decide({"ddmerrorcode": 7}).reason == "no retry rule matches these errors"  # type: ignore[attr-defined]
    d = _decide({"piloterrorcode": 1201}, attemptnr=3)
    assert d.action == "no_retry" and "was the last" in d.reason  # type: ignore[attr-defined]
