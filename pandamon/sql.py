"""Low-level SQL helpers shared by the named reads (`queries`) and the rollups (`rollups`): a
plain fetch, an aggregate with its session settings, and the diag-masking expression; and for the
embedded SQLite database the two PostgreSQL features the named reads lean on, rebuilt from plain
SQL (`grouping_sets_sqlite`, `bucket_sqlite`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from pandamon.errortext import MASKS


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())


def _fetch_aggregate(sql: str, params: Sequence[Any], *, bitmap: bool = False) -> list[tuple[Any, ...]]:
    """An aggregate over every row of a window (facets, error templates), PostgreSQL only (the
    SQLite siblings use `_fetch`), with settings for it:

    * `work_mem` 64 MB so the grouping sets hash in memory instead of sorting on disk;
    * no JIT: compiling costs more than it saves on half a million rows;
    * with `bitmap`, no plain index scan: on a time window of one table it visits the heap once per
      row where a bitmap scan reads each page once (the planner misjudges this when rows of a
      window are clustered but not ordered). Not for joins, which need their index lookups.

    Set for the session around the one query and reset after it, even when it fails (two more
    statements, counted in the pinned query counts).
    """
    settings = "SET work_mem = '64MB'; SET jit = off" + ("; SET enable_indexscan = off" if bitmap else "")
    with connection.cursor() as cursor:
        cursor.execute(settings)
        try:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall())
        finally:
            cursor.execute("RESET work_mem; RESET enable_indexscan; RESET jit")


def template_expression(column: str) -> tuple[str, list[str]]:
    """SQL masking a diag column with `errortext.MASKS` (patterns bound as parameters)."""
    sql = column
    params: list[str] = []
    for pattern, repl in MASKS:
        sql = f"regexp_replace({sql}, %s, %s, 'g')"
        params = [*params, pattern, repl]
    # Parameters are consumed innermost first, and the innermost call is the first mask.
    return sql, params


# --- SQLite (the embedded run) ------------------------------------------------------------------

# `date_trunc(unit, t)` of a Django-stored SQLite datetime (UTC text, "YYYY-MM-DD HH:MM:SS[.f]").
_SQLITE_BUCKET_FORMATS = {"hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}


def bucket_sqlite(unit: str) -> str:
    """The `strftime` format truncating a stored datetime to `unit` (bound as a parameter: the
    SQLite cursor wrapper rewrites `%` sequences in the statement text)."""
    return _SQLITE_BUCKET_FORMATS[unit]


def parse_bucket_sqlite(text: str | None) -> datetime | None:
    """A bucket from `strftime` back to the aware UTC datetime PostgreSQL's date_trunc returns."""
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def grouping_sets_sqlite(
    source: str,
    *,
    flags: Sequence[str],
    columns: Sequence[str],
    sets: Sequence[Sequence[str]],
    aggregates: str,
) -> str:
    """`SELECT GROUPING(flags…), columns…, aggregates FROM source GROUP BY GROUPING SETS (sets)` for
    SQLite, which has no grouping sets: the source is materialized once as a CTE (one scan, as on
    PostgreSQL) and each set is its own GROUP BY over it, UNION ALL'd. The GROUPING() flags are
    constants (0 for a column of the set, 1 otherwise) and columns outside the set are NULL, so rows
    have exactly the shape, and the counts exactly the values, PostgreSQL returns. Only constant
    column names are interpolated; the source's placeholders are bound once.
    """
    parts = []
    for grouped in sets:
        flag_sql = ", ".join("0" if c in grouped else "1" for c in flags)
        column_sql = ", ".join(c if c in grouped else "NULL" for c in columns)
        parts.append(
            f"SELECT {flag_sql}, {column_sql}, {aggregates} FROM src GROUP BY {', '.join(grouped)}"  # noqa: S608
        )
    return f"WITH src AS MATERIALIZED ({source}) " + " UNION ALL ".join(parts)
