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


# --- each default rule fires on what the pilot really reports ------------------------------------------
# The fields come from the pilot's own diagnosis (ailuro.pilot.diagnose) of a payload's exit and
# output tail, parsed by the server as a v1 update_job, and are decided by the rules the migrations
# seeded.

SQLALCHEMY_REFUSED = """\
INFO 2025-04-11T11:24:30.123-07:00 lsst.daf.butler ()(_butler.py:312) - loading butler
Traceback (most recent call last):
  File "/opt/lsst/daf_butler/python/lsst/daf/butler/registry/databases/postgresql.py", line 102, in makeEngine
    return sqlalchemy.engine.create_engine(uri, pool_size=1).connect()
sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "db" (172.18.0.2), port 5432 failed: Connection refused
	Is the server running on that host and accepting TCP/IP connections?

(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""
CONNECTION_REFUSED = """\
Traceback (most recent call last):
  File "/opt/payload/fetch.py", line 12, in <module>
    sock.connect(("db", 5432))
ConnectionRefusedError: [Errno 111] Connection refused
"""
PSYCOPG3_STARTING = """\
Traceback (most recent call last):
  File "/opt/payload/run.py", line 40, in main
    conn = psycopg.connect(dsn)
psycopg.OperationalError: connection failed: FATAL:  the database system is starting up
"""
DNS_FAILURE = """\
Traceback (most recent call last):
  File "/usr/lib/python3.11/socket.py", line 962, in getaddrinfo
    for res in _socket.getaddrinfo(host, port, family, type, proto, flags):
socket.gaierror: [Errno -3] Temporary failure in name resolution
"""
NO_ROUTE = """\
Traceback (most recent call last):
  File "/opt/payload/stage.py", line 88, in put
    r = session.put(url, data=body)
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='s3.example.org', port=443): Max retries exceeded with url: /bucket/x (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f2c>: Failed to establish a new connection: [Errno 113] No route to host'))
"""
KEY_ERROR = """\
Traceback (most recent call last):
  File "/opt/lsst/pipe_tasks/python/lsst/pipe/tasks/calibrate.py", line 488, in run
    visit = dataId["visit"]
KeyError: 'visit'
"""
PIPETASK_KEY_ERROR = (
    "ERROR 2025-04-11T11:24:37.336-07:00 lsst.ctrl.mpexec.singleQuantumExecutor (calibrate:{visit: 1228})"
    "(singleQuantumExecutor.py:258) - Execution of task 'calibrate' on quantum {visit: 1228} failed. "
    "Exception KeyError: 'visit'\n"
)


def _pilot_report(outcome: object, output: str) -> dict[str, object]:
    """The errors the server stores for a failed attempt the pilot diagnosed as `outcome`."""
    from ailuro.pilot.diagnose import diagnose, output_lines
    from dispatcher.protocol.pilot import pilot_update

    fields = diagnose(outcome, output_lines(output.encode())).fields()  # type: ignore[arg-type]
    return dict(pilot_update({"job_id": 1, "attempt_nr": 1, "job_status": "failed", **fields}).errors)


def _outcomes() -> list[tuple[str, object, str, str, str]]:
    from ailuro.pilot.diagnose import Outcome
    from ailuro.protocol import PILOT_ERROR_PREEMPTED, PILOT_ERROR_WALLTIME

    return [
        ("sqlalchemy refused", Outcome(exit_code=1), SQLALCHEMY_REFUSED, "retry", "database-connection-exe"),
        (
            "ConnectionRefusedError",
            Outcome(exit_code=1),
            CONNECTION_REFUSED,
            "retry",
            "database-connection-exe",
        ),
        (
            "psycopg 3 starting up",
            Outcome(exit_code=1),
            PSYCOPG3_STARTING,
            "retry",
            "database-connection-exe",
        ),
        ("DNS failure", Outcome(exit_code=1), DNS_FAILURE, "retry", "network-exe"),
        ("no route to host", Outcome(exit_code=1), NO_ROUTE, "retry", "network-exe"),
        ("SIGTERM from the batch system", Outcome(exit_code=143), "", "retry", "killed-by-signal"),
        (
            "preempted: the pilot got SIGTERM",
            Outcome(
                exit_code=143,
                pilot_stop=(PILOT_ERROR_PREEMPTED, "pilot received SIGTERM (preempted by the batch system)"),
            ),
            "",
            "retry",
            "preempted",
        ),
        ("SIGBUS: the node's storage failed", Outcome(exit_code=135), "", "retry", "killed-by-signal"),
        (
            "walltime",
            Outcome(
                exit_code=143, pilot_stop=(PILOT_ERROR_WALLTIME, "payload exceeded its walltime of 3600 s")
            ),
            "",
            "increase_walltime",
            "walltime-exceeded",
        ),
        ("KeyError traceback", Outcome(exit_code=1), KEY_ERROR, "no_retry", "payload-error"),
        ("pipetask KeyError", Outcome(exit_code=1), PIPETASK_KEY_ERROR, "no_retry", "payload-error"),
        (
            "segfault",
            Outcome(exit_code=139),
            "Segmentation fault (core dumped)\n",
            "no_retry",
            "payload-error",
        ),
    ]


@pytest.mark.parametrize("case", range(12))
def test_each_default_rule_fires_on_the_pilots_own_report(case: int) -> None:
    name, outcome, output, action, rule = _outcomes()[case]
    errors = _pilot_report(outcome, output)
    got_action, reason, _, backoff = _decide(errors, walltime_s=3600, max_walltime_s=86400)
    assert (got_action, reason.split(":")[0]) == (action, f"rule {rule}"), (name, errors)
    if action == "retry":
        assert backoff >= 60, name


@pytest.mark.parametrize(
    ("code", "diag"),
    [(100, "lost heartbeat: none for 7200 s"), (102, "sent to a pilot but no reply for 1800 s")],
)
def test_the_watchers_silent_node_failures_are_retried_after_a_backoff(code: int, diag: str) -> None:
    got_action, _, _, backoff = _decide({"jobdispatchererrorcode": code, "jobdispatchererrordiag": diag})
    assert (got_action, backoff) == ("retry", 60)


def test_a_walltime_overrun_at_the_longest_queue_is_not_retried() -> None:
    from ailuro.pilot.diagnose import Outcome
    from ailuro.protocol import PILOT_ERROR_WALLTIME

    stop = (PILOT_ERROR_WALLTIME, "payload exceeded its walltime of 86400 s")
    errors = _pilot_report(Outcome(exit_code=143, pilot_stop=stop), "")
    assert _decide(errors, walltime_s=86400, max_walltime_s=86400)[0] == "no_retry"


def test_migration_0007_adds_its_rules_and_widens_only_unedited_patterns() -> None:
    import importlib

    from django.apps import apps

    from dispatcher.retry import DB_ERRORS_0002, RULES_SEEDED_0007

    migration = importlib.import_module("dispatcher.migrations.0007_retry_walltime_and_network_rules")
    # A database as 0002 left it, with one default rule edited by an operator.
    RetryRule.objects.filter(name__in=[r["name"] for r in RULES_SEEDED_0007]).delete()
    RetryRule.objects.filter(name="database-connection-exe").update(diag_regex=DB_ERRORS_0002)
    RetryRule.objects.filter(name="database-connection-taskbuffer").update(diag_regex="edited by an operator")

    migration.seed(apps, None)

    assert set(
        RetryRule.objects.filter(name__in=["walltime-exceeded", "network-exe"]).values_list(
            "action", flat=True
        )
    ) == {
        "increase_walltime",
        "retry",
    }
    widened = RetryRule.objects.get(name="database-connection-exe").diag_regex
    assert widened != DB_ERRORS_0002 and "the database system is" in widened
    assert RetryRule.objects.get(name="database-connection-taskbuffer").diag_regex == "edited by an operator"

    migration.unseed(apps, None)
    assert not RetryRule.objects.filter(name__in=["walltime-exceeded", "network-exe"]).exists()
    assert RetryRule.objects.get(name="database-connection-exe").diag_regex == DB_ERRORS_0002
