"""Readiness checks behind /readyz: is this process able to serve, part by part.

Each check returns a `Part` — a status and a few plain facts — and never raises: a probe must get
an answer, not a 500. `readiness()` runs them all and says which ones fail. Error details go to the
log (the endpoint is unauthenticated, so the body names the failing part and the kind of failure,
not host names or credentials). A part joins by adding a function to `CHECKS`.

The parts: the database (reachable, migrated), the broker (reachable), and the loops (each ran
within its allowed lag, `core.loop_health`). The loops part is judged only from the database; when
the database part fails it is skipped (`NEEDS_DATABASE`), so an outage is named once, as the
database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from core.loop_health import loop_states

log = logging.getLogger(__name__)

OK = "ok"
FAILING = "failing"
SKIPPED = "skipped"

# A probe has a few seconds; a broker that does not answer in this time is as good as down.
BROKER_TIMEOUT_S = 2.0
# Brokers that live inside the process (the embedded run) have nothing to reach.
IN_PROCESS_BROKERS = {"memory"}


@dataclass(frozen=True)
class Part:
    status: str  # OK, FAILING or SKIPPED
    facts: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, **self.facts}


def _elapsed_ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def database_part() -> Part:
    """Reachable (one `SELECT 1` on the process's own connection) and migrated (no migration of
    the code on disk missing from django_migrations: a new image before its migrations job ran, or
    a database restored from an older backup, is not ready)."""
    start = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        reachable_ms = _elapsed_ms(start)
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        log.warning("readiness: database unreachable: %s", exc)
        return Part(FAILING, {"error": f"cannot query the database ({type(exc).__name__})"})
    except Exception as exc:  # an inconsistent migration graph (NodeNotFoundError, ...): still an answer
        log.warning("readiness: migration state unreadable: %s", exc)
        return Part(FAILING, {"error": f"cannot compare the migrations ({type(exc).__name__})"})
    if unapplied:
        names = [f"{migration.app_label}.{migration.name}" for migration, _ in unapplied]
        log.warning("readiness: %d unapplied migrations: %s", len(names), ", ".join(names[:20]))
        return Part(
            FAILING,
            {
                "error": f"{len(names)} unapplied migrations (run manage.py migrate)",
                "unapplied": names[:20],
            },
        )
    return Part(OK, {"latency_ms": reachable_ms, "migrations": "applied"})


def broker_part(url: str | None = None) -> Part:
    """The Celery broker answers (a connection and a channel), when one outside the process is
    configured; `memory://` is the embedded run's and skipped."""
    url = settings.CELERY_BROKER_URL if url is None else url
    transport = url.split("://", 1)[0]
    if not url or transport in IN_PROCESS_BROKERS:
        return Part(SKIPPED, {"transport": transport or "none", "detail": "no broker outside this process"})
    from kombu.connection import Connection  # celery's messaging library; only needed when a broker is set

    start = time.monotonic()
    try:
        with Connection(  # type: ignore[no-untyped-call]  # kombu ships no type hints
            url,
            connect_timeout=BROKER_TIMEOUT_S,
            transport_options={"socket_timeout": BROKER_TIMEOUT_S, "max_retries": 0},
        ) as conn:
            conn.ensure_connection(max_retries=0, interval_start=0, timeout=BROKER_TIMEOUT_S)
            conn.default_channel  # noqa: B018 - opening the channel is the round trip that proves it answers
    except Exception as exc:  # kombu and its transports raise many unrelated types for "unreachable"
        log.warning("readiness: broker (%s) unreachable: %s", transport, exc)
        return Part(
            FAILING, {"transport": transport, "error": f"cannot reach the broker ({type(exc).__name__})"}
        )
    return Part(OK, {"transport": transport, "latency_ms": _elapsed_ms(start)})


def loops_part() -> Part:
    """Each loop of the table (`settings.AILURO_LOOPS`) completed a run within its allowed lag, or
    has not had the time to (a loop with no completed run gets this process's uptime and a grace,
    `core.loop_health`). Failing names each stalled loop with its lag and the lag it is allowed;
    not the error of its last run, which may carry host names (the monitor's loop strip shows it)."""
    try:
        states = loop_states()
    except DatabaseError as exc:  # the database part says why
        log.warning("readiness: loop runs unreadable: %s", exc)
        return Part(SKIPPED, {"detail": f"cannot read the loop runs ({type(exc).__name__})"})
    if not states:
        return Part(SKIPPED, {"detail": "no loops configured"})
    stalled = {
        state.name: {
            "lag_s": state.lag_s,
            "max_lag_s": state.max_lag_s,
            "succeeded_at": state.succeeded_at.isoformat() if state.succeeded_at else None,
        }
        for state in states
        if state.stalled
    }
    if stalled:
        named = ", ".join(
            f"{name} ({facts['lag_s']:.0f} s > {facts['max_lag_s']:.0f} s)" for name, facts in stalled.items()
        )
        log.warning("readiness: loops stalled: %s", named)
        return Part(FAILING, {"error": f"loops stalled: {named}", "stalled": stalled})
    return Part(OK, {"loops": len(states)})


CHECKS: dict[str, Callable[[], Part]] = {
    "database": database_part,
    "broker": broker_part,
    "loops": loops_part,
}


@dataclass(frozen=True)
class Readiness:
    parts: dict[str, Part]

    @property
    def failing(self) -> list[str]:
        return [name for name, part in self.parts.items() if part.status == FAILING]

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "unavailable" if self.failing else "ready",
            "failing": self.failing,
            "checks": {name: part.as_json() for name, part in self.parts.items()},
        }


# Parts judged from the database: skipped without a query when the database part failed, so an
# outage is named once and a database that does not answer is waited for once per probe (each
# wait is up to the connect timeout, and a probe has a few seconds).
NEEDS_DATABASE = frozenset({"loops"})


def readiness(checks: dict[str, Callable[[], Part]] | None = None) -> Readiness:
    parts: dict[str, Part] = {}
    for name, check in (checks or CHECKS).items():
        database = parts.get("database")
        if name in NEEDS_DATABASE and database is not None and database.status == FAILING:
            parts[name] = Part(SKIPPED, {"detail": "the database is failing"})
        else:
            parts[name] = check()
    return Readiness(parts)
