"""The default rules seeded by migration 0002, through the real retry decision."""

from __future__ import annotations

import pytest

from dispatcher.models import RetryRule
from dispatcher.retry import DEFAULT_RULES, retry_decide, retry_rules_active

pytestmark = pytest.mark.django_db


def _decide(errors: dict[str, object], **kw: object) -> tuple[str, str, int | None, int]:
    args: dict[str, object] = {
        "label": "isr",
        "attemptnr": 1,
        "max_attempts": 3,
        "memory_mb": 8000,
        "max_memory_mb": 32000,
    }
    args.update(kw)
    d = retry_decide(errors=errors, rules=retry_rules_active(), **args)  # type: ignore[arg-type]
    return d.action, d.reason, d.memory_mb, d.backoff_s


def test_the_migration_seeded_every_default_rule() -> None:
    assert set(RetryRule.objects.values_list("name", flat=True)) >= {r["name"] for r in DEFAULT_RULES}


@pytest.mark.parametrize(
    ("errors", "action", "rule"),
    [
        ({"jobdispatchererrorcode": 100}, "retry", "lost-heartbeat"),
        ({"jobdispatchererrorcode": 102}, "retry", "sent-no-reply"),
        ({"piloterrorcode": 1379}, "retry", "preempted"),
        ({"piloterrorcode": 1201}, "retry", "killed-by-signal"),
        ({"piloterrorcode": 1208}, "retry", "killed-by-signal"),
        ({"piloterrorcode": 1212}, "increase_memory", "oom-pilot"),
        ({"piloterrorcode": 1235}, "increase_memory", "oom-pilot-rss"),
        ({"transexitcode": 137}, "increase_memory", "oom-exit-137"),
        ({"exeerrorcode": 1, "exeerrordiag": "std::bad_alloc thrown"}, "increase_memory", "oom-diag-exe"),
        (
            {"piloterrorcode": 1999, "piloterrordiag": "Out of memory (cgroup)"},
            "increase_memory",
            "oom-diag-pilot",
        ),
        (
            {"exeerrorcode": 1, "exeerrordiag": "psycopg2.OperationalError: could not connect to server"},
            "retry",
            "database-connection-exe",
        ),
        ({"transexitcode": 1}, "no_retry", "payload-error"),
        ({"exeerrorcode": 65, "exeerrordiag": "KeyError: 'visit'"}, "no_retry", "execution-error"),
        ({"piloterrorcode": 1305}, "no_retry", "pilot-error"),
    ],
)
def test_each_kind_of_failure_gets_its_default_decision(
    errors: dict[str, object], action: str, rule: str
) -> None:
    got_action, reason, _, _ = _decide(errors)
    assert (got_action, reason.split(":")[0]) == (action, f"rule {rule}")


def test_out_of_memory_doubles_and_transient_errors_back_off() -> None:
    assert _decide({"piloterrorcode": 1212})[2] == 16000
    assert _decide({"jobdispatchererrorcode": 100})[3] == 60
    assert (
        _decide(
            {"taskbuffererrorcode": 1, "taskbuffererrordiag": "server closed the connection unexpectedly"}
        )[3]
        == 300
    )


def test_an_unknown_error_family_code_is_not_retried() -> None:
    assert _decide({"ddmerrorcode": 200})[0] == "no_retry"


def test_a_rule_added_in_admin_before_the_defaults_wins() -> None:
    RetryRule.objects.create(
        name="isr-flaky", error_family="trans", code=1, scope_label="isr", action="retry", order=1
    )
    assert _decide({"transexitcode": 1})[1] == "rule isr-flaky: transient error"
    assert _decide({"transexitcode": 1}, label="calibrate")[0] == "no_retry"
