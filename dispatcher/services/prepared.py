"""Hot-path statements as server-side prepared statements (PostgreSQL)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper


def fetch_prepared(sql: str, params: Mapping[str, Any], local_settings: str = "") -> list[tuple[Any, ...]]:
    """Run a hot-path statement as a server-side prepared statement (PostgreSQL).

    Django's psycopg cursors bind parameters on the client, so PostgreSQL would parse and plan the
    multi-CTE statement on every call; a psycopg server-binding cursor with `prepare=True` plans it
    once per connection — with `plan_cache_mode=force_generic_plan` (config/settings.py), since
    PostgreSQL would otherwise keep building custom plans. Each statement must therefore have a good
    plan whatever its parameters: look up rows by key, and pass state lists as parameters where a
    literal list would match a partial index's predicate (`pilot_calls.messages.IN_FLIGHT`). The
    statement still goes through Django's error translation and is recorded in `connection.queries`
    when queries are logged (tests pin query counts). Not for PgBouncer in transaction mode without
    prepared-statement support (docs/decisions/0004).

    `local_settings` (`SET LOCAL ...` statements) are in force for the statement, and so for its
    plan when it is made or remade: in the caller's transaction, or else in one of the statement's
    own, opened in the same round trip as the settings and committed after it.
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local lookup
    db.ensure_connection()
    raw = db.connection
    if raw is None:  # ensure_connection() raises instead; this keeps the type checker informed
        raise RuntimeError("no database connection")
    # Outside a transaction (autocommit); inside one, even one begun without atomic(), the caller's.
    own_transaction = bool(local_settings) and db.get_autocommit()
    started = time.monotonic()
    with db.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        try:
            if local_settings:
                cursor.execute(f"BEGIN; {local_settings}" if own_transaction else local_settings)
                _log(db, local_settings, started)
            cursor.execute(sql, params, prepare=True)
            rows = cursor.fetchall() if cursor.description else []
        except BaseException:
            if own_transaction:  # the first error is the one to raise, even if the link is gone
                with contextlib.suppress(psycopg.Error):
                    cursor.execute("ROLLBACK")
            raise
        if own_transaction:
            cursor.execute("COMMIT")
    _log(db, sql, started)
    return rows


def _log(db: BaseDatabaseWrapper, sql: str, started: float) -> None:
    if db.queries_logged:
        db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
