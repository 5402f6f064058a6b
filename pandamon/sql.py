"""Low-level SQL helpers of the PostgreSQL reads (`rollups`, `queries.tasks`) and the rollup fold:
an aggregate with its session settings, and the diag-masking expression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection

from pandamon.errortext import MASKS


def _fetch_aggregate(sql: str, params: Sequence[Any], *, bitmap: bool = False) -> list[tuple[Any, ...]]:
    """An aggregate over every row of a window (facets, error templates), PostgreSQL only, with
    settings for it:

    * `work_mem` 64 MB so the grouping sets hash in memory instead of sorting on disk (JIT is off
      for every connection: config/settings.py);
    * with `bitmap`, no plain index scan: on a time window of one table it visits the heap once per
      row where a bitmap scan reads each page once (the planner misjudges this when rows of a
      window are clustered but not ordered). Not for joins, which need their index lookups.

    Set for the session around the one query and reset after it, even when it fails (two more
    statements, counted in the pinned query counts).
    """
    settings = "SET work_mem = '64MB'" + ("; SET enable_indexscan = off" if bitmap else "")
    with connection.cursor() as cursor:
        cursor.execute(settings)
        try:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall())
        finally:
            cursor.execute("RESET work_mem; RESET enable_indexscan")


def template_expression(column: str) -> tuple[str, list[str]]:
    """SQL masking a diag column with `errortext.MASKS` (patterns bound as parameters)."""
    sql = column
    params: list[str] = []
    for pattern, repl in MASKS:
        sql = f"regexp_replace({sql}, %s, %s, 'g')"
        params = [*params, pattern, repl]
    # Parameters are consumed innermost first, and the innermost call is the first mask.
    return sql, params
