"""Monitor rollups (decision 0003): the fold, the backfill, and the reads that answer a time window
from per-hour summaries instead of scanning every job or failed attempt in it.

Exactness: a window [since, until) is cut into whole UTC hours [h0, h1) and the partial hours at its
edges, [since, h0) and [h1, until). Whole hours come from the summary plus the deltas not folded
yet; the edges are scanned live from the job (attempt) table. The three parts are read in one
statement, so one snapshot: a fold committing meanwhile moves deltas into the summary atomically
and is seen entirely or not at all. The result equals the plain scan of the window, always.

The same reads answer a selection the summaries cannot (a filter other than the state, no window,
a window without a whole hour): with `live`, every row is scanned from that selection through the
same statement, so each aggregate has one read on PostgreSQL. PostgreSQL only (`enabled()`); on
SQLite the pages count with the ORM (pandamon/queries/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from dispatcher import changefeed
from dispatcher.queries import archive_reached, attempts_with_archive_sql, jobs_with_archive_sql
from pandamon import rollup_sql
from pandamon.sql import _fetch_aggregate, template_expression

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_FOLD_LOCK_KEY = 0x61696C75726F03  # "ailuro" + 3: the advisory lock id of the monitor fold


def fold_lock_sql() -> tuple[str, list[Any]]:
    """The statement that waits for, then holds until the transaction ends, the fold's lock: no
    fold runs meanwhile (a migration moving summary rows takes it)."""
    return "SELECT pg_advisory_xact_lock(%s)", [_FOLD_LOCK_KEY]


def enabled() -> bool:
    return connection.vendor == "postgresql"


def _floor_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    floor = _floor_hour(t)
    return floor if floor == t else floor + HOUR


@dataclass(frozen=True)
class Window:
    """A time window cut for the rollups: whole hours [h0, h1) (h1 None: open) and the edges."""

    h0: datetime
    h1: datetime | None
    edges: tuple[tuple[datetime, datetime], ...]

    @classmethod
    def of(cls, since: datetime, until: datetime | None) -> Window | None:
        """None when the window holds no whole hour (scan it: it is small)."""
        h0 = _ceil_hour(since)
        if until is None:
            return cls(h0, None, ((since, h0),) if since < h0 else ())
        h1 = _floor_hour(until)
        if h1 <= h0:
            return None
        edges = tuple((lo, hi) for lo, hi in ((since, h0), (h1, until)) if lo < hi)
        return cls(h0, h1, edges)

    def hours_sql(self, column: str) -> tuple[str, list[Any]]:
        """`column` within the whole hours."""
        if self.h1 is None:
            return f"{column} >= %s", [self.h0]
        return f"{column} >= %s AND {column} < %s", [self.h0, self.h1]

    def edges_sql(self, column: str) -> tuple[str, list[Any]]:
        """`column` within the edges (FALSE when there are none)."""
        if not self.edges:
            return "FALSE", []
        parts = " OR ".join(f"({column} >= %s AND {column} < %s)" for _ in self.edges)
        return f"({parts})", [t for edge in self.edges for t in edge]


def _states_sql(column: str, states: Sequence[str] | None) -> tuple[str, list[Any]]:
    if states is None:
        return "TRUE", []
    return f"{column} = ANY(%s)", [list(states)]


# --- /jobs/ facets and chart ----------------------------------------------------------------------

_NAMES = list(rollup_sql.JOB_FACET_COLUMNS)


LiveSelection = QuerySet[Any] | tuple[str, list[Any]]


def _live_source(live: LiveSelection | None, table: str) -> tuple[str, list[Any]]:
    """The rows scanned live: `table`, or the ORM-compiled selection `live` (bound parameters; its
    columns keep their names, so the statement reads it as it reads the table), or a FROM item
    already compiled (SQL, parameters)."""
    if live is None:
        return table, []
    if isinstance(live, tuple):
        return live
    sql, params = live.order_by().query.sql_with_params()
    return f"({sql})", list(params)


def _job_table(window: Window | None) -> str:
    """What a window's edges are scanned in: the job table, or with the archived jobs when an edge
    starts at or before the archive's horizon (the whole hours come from the summaries, which an
    archive move leaves as they are)."""
    if window is None or not window.edges:
        return "dispatcher_job"
    if archive_reached(min(lo for lo, _ in window.edges)):
        return jobs_with_archive_sql()
    return "dispatcher_job"


def _cut(
    window: Window | None, live: LiveSelection | None, edges: str, hours: str, deltas: str
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]], tuple[str, list[Any]]]:
    """The WHERE of the live scan, the summary and the deltas: the window's edges and whole hours,
    or with `live` the whole selection scanned and nothing from the summary."""
    if live is not None:
        return ("TRUE", []), ("FALSE", []), ("FALSE", [])
    if window is None:
        raise ValueError("a rollup read needs a window or a live selection")
    return window.edges_sql(edges), window.hours_sql(hours), window.hours_sql(deltas)


# A condition on a filter dimension's value: ("eq", values), ("range", (low, high)) (a prefix under
# a code-point collation), ("like", (pattern,)) or ("nonempty", ()).
Pred = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class DimFilter:
    """A /jobs/ filter on one dimension of the filter summary (`rollup_sql.FILTER_DIMENSIONS`) or
    on a pair (`rollup_sql.FILTER_PAIRS`, the values `rollup_sql.pair_value`), as the selection
    compiles it: (any of `include`, or everything without it) and none of `exclude`, on the
    dimension's text value (NULL queue → '')."""

    dim: str
    include: tuple[Pred, ...]
    exclude: tuple[Pred, ...] = ()


def _preds_sql(expr: str, preds: Sequence[Pred]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for kind, values in preds:
        if kind == "eq":
            parts.append(f"{expr} = ANY(%s)")
            params.append(list(values))
        elif kind == "range":
            parts.append(f"({expr} >= %s AND {expr} < %s)")
            params.extend(values)
        elif kind == "like":
            parts.append(f"{expr} LIKE %s")
            params.append(values[0])
        else:
            parts.append(f"{expr} <> ''")
    return "(" + " OR ".join(parts) + ")", params


def dim_where(expr: str, dim: DimFilter) -> tuple[str, list[Any]]:
    """The filter as a condition on `expr`, the dimension's text value."""
    sql, params = _preds_sql(expr, dim.include) if dim.include else ("TRUE", [])
    if dim.exclude:
        ex_sql, ex_params = _preds_sql(expr, dim.exclude)
        sql, params = f"{sql} AND NOT {ex_sql}", [*params, *ex_params]
    return sql, params


def _floor_day(t: datetime) -> datetime:
    return _floor_hour(t).replace(hour=0)


def _ceil_day(t: datetime) -> datetime:
    floor = _floor_day(t)
    return floor if floor == t else floor + DAY


def _whole_days(window: Window | None) -> tuple[datetime, datetime | None] | None:
    """The whole UTC days [d0, d1) within the window's whole hours (d1 None: open, as the window),
    or None when there is not one complete day among them."""
    if window is None:
        return None
    d0 = _ceil_day(window.h0)
    if window.h1 is None:
        return (d0, None) if d0 + DAY <= datetime.now(UTC) else None
    d1 = _floor_day(window.h1)
    return (d0, d1) if d1 > d0 else None


def _range_sql(lo: datetime | None, hi: datetime | None) -> tuple[str, list[Any]]:
    """`bucket` within [lo, hi) (either end open when None)."""
    parts = [sql for sql, bound in (("bucket >= %s", lo), ("bucket < %s", hi)) if bound is not None]
    return " AND ".join(parts) or "TRUE", [bound for bound in (lo, hi) if bound is not None]


def _summary_source(dim: DimFilter | None, window: Window | None = None) -> tuple[str, list[Any]]:
    """The summary rows of the jobs the filter keeps, as (bucket, jobstatus, facet, value, count):
    the job summary; or the filter summary's rows of the kept values, per day for the window's
    whole days (decision 0019: every facet but the state, which is read per hour for the chart)
    and per hour around them; or, for a negation only, the job summary less the filter summary's
    rows of the excluded values."""
    if dim is None:
        return "pandamon_jobsummary", []
    cols = "bucket, jobstatus, facet, value"
    if dim.include:
        where, params = dim_where("dimvalue", dim)
        days = _whole_days(window)
        if window is None or days is None:
            sql = f"(SELECT {cols}, count FROM pandamon_jobfiltersummary WHERE dim = %s AND {where})"  # noqa: S608
            return sql, [dim.dim, *params]
        (d0, d1), h0, h1 = days, window.h0, window.h1
        # (table, extra condition, bucket range): the hours before and after the days, the days'
        # state rows per hour, the days' other facets per day.
        parts = [
            ("pandamon_jobfiltersummary", "", (h0, d0)),
            *([("pandamon_jobfiltersummary", "", (d1, h1))] if d1 is not None else []),
            ("pandamon_jobfiltersummary", " AND facet = 'jobstatus'", (d0, d1)),
            (rollup_sql.FILTER_DAY_SUMMARY_TABLE, "", (d0, d1)),
        ]
        selects: list[str] = []
        all_params: list[Any] = []
        for table, extra, (lo, hi) in parts:
            range_sql, range_params = _range_sql(lo, hi)
            selects.append(
                f"SELECT {cols}, count FROM {table} WHERE dim = %s AND {where}{extra} AND {range_sql}"  # noqa: S608  (names, placeholders)
            )
            all_params += [dim.dim, *params, *range_params]
        return "(" + " UNION ALL ".join(selects) + ")", all_params
    where, params = _preds_sql("dimvalue", dim.exclude)
    sql = (
        f"(SELECT {cols}, count FROM pandamon_jobsummary UNION ALL "  # noqa: S608  (names, placeholders)
        f"SELECT {cols}, -count FROM pandamon_jobfiltersummary WHERE dim = %s AND {where})"
    )
    return sql, [dim.dim, *params]


def job_facet_rows(
    window: Window | None,
    *,
    states: Sequence[str] | None,
    unit: str,
    live: LiveSelection | None = None,
    archive: bool | None = None,
    dim: DimFilter | None = None,
    edge_live: LiveSelection | None = None,
) -> list[tuple[str, str, datetime | None, int]]:
    """(facet, value, None, count) per facet value and ('', jobstatus, bucket, count) per chart
    bucket, for the jobs of the window (optionally only those in `states`, and with `dim` only
    those its filter keeps, `edge_live` being the whole selection for the edges), or with `live`
    (and `window` None) for every job of that selection. One statement:

    1. edges (or the live selection): the facet GROUPING SETS of the scanned rows, as rows;
    2. whole hours: the summary rows (`_summary_source`, read once: a materialized CTE), and
       their `jobstatus` facet re-bucketed by `unit` for the chart;
    3. the deltas not folded yet (those the filter keeps), exploded the way the fold does;
    4. summed per (facet, value, bucket); zero sums dropped (a +1 and −1 not folded yet).
    """
    # `archive`: the caller knows whether the window reaches the archive (None: ask).
    table = (
        _job_table(window) if archive is None else jobs_with_archive_sql() if archive else "dispatcher_job"
    )
    source, source_params = _live_source(live if live is not None else edge_live, table)
    (edge_where, edge_params), (hours_where, hours_params), (delta_where, delta_params) = _cut(
        window, live, "j.statechangetime", "s.bucket", "d.statechangetime"
    )
    summary, summary_params = _summary_source(dim, window if live is None else None)
    if dim is not None:
        dim_sql, dim_params = dim_where(rollup_sql.filter_dim_value_sql("d", dim.dim), dim)
        delta_where, delta_params = f"{delta_where} AND {dim_sql}", [*delta_params, *dim_params]
    est, est_p = _states_sql("j.jobstatus", states)
    sst, sst_p = _states_sql("s.jobstatus", states)
    dst, dst_p = _states_sql("d.jobstatus", states)
    # Grouped on the raw columns; only the grouped values become the summary's text.
    columns = [rollup_sql.JOB_FACET_COLUMNS[n] for n in _NAMES]
    edge_cols = ", ".join(f"j.{c}" for c in columns)
    sets = ", ".join(f"(e.{c})" for c in columns) + ", (e.bucket, e.jobstatus)"
    grouping = ", ".join(f"GROUPING(e.{c}) AS g_{n}" for n, c in zip(_NAMES, columns, strict=True))
    values = ", ".join(f"{rollup_sql.job_facet_value_sql('e', n)} AS f_{n}" for n in _NAMES)
    facet_case = " ".join(f"WHEN g_{n} = 0 THEN '{n}'" for n in _NAMES)
    value_case = " ".join(f"WHEN g_{n} = 0 THEN f_{n}" for n in _NAMES)
    sql = f"""
        WITH edge AS (
            SELECT {edge_cols}, date_trunc(%s, j.statechangetime) AS bucket
            FROM {source} j WHERE {edge_where} AND {est}
        ), summ AS MATERIALIZED (
            SELECT s.bucket, s.jobstatus, s.facet, s.value, s.count FROM {summary} s
            WHERE {hours_where} AND {sst}
        ), edge_sets AS (
            SELECT {grouping}, GROUPING(e.bucket) AS g_bucket, {values}, e.bucket, COUNT(*) AS n
            FROM edge e GROUP BY GROUPING SETS ({sets})
        ), src AS (
            SELECT CASE {facet_case} END AS facet, CASE {value_case} END AS value,
                   NULL::timestamptz AS bucket, n FROM edge_sets WHERE g_bucket = 1
            UNION ALL
            SELECT '', f_jobstatus, bucket, n FROM edge_sets WHERE g_bucket = 0
            UNION ALL
            SELECT s.facet, s.value, NULL, s.count FROM summ s
            UNION ALL
            SELECT '', s.jobstatus, date_trunc(%s, s.bucket), s.count FROM summ s WHERE s.facet = 'jobstatus'
            UNION ALL
            SELECT v.facet, v.value, NULL, d.delta FROM dispatcher_jobchange d
            CROSS JOIN LATERAL (VALUES {rollup_sql.job_explode_values("d")}) AS v(facet, value)
            WHERE {delta_where} AND {dst}
            UNION ALL
            SELECT '', d.jobstatus, date_trunc(%s, d.statechangetime), d.delta
            FROM dispatcher_jobchange d WHERE {delta_where} AND {dst}
        )
        SELECT facet, value, bucket, SUM(n) FROM src GROUP BY facet, value, bucket HAVING SUM(n) <> 0
    """  # noqa: S608  (constant names and placeholders only)
    params: list[Any] = [
        unit,
        *source_params,
        *edge_params,
        *est_p,
        *summary_params,
        *hours_params,
        *sst_p,
        unit,
        *delta_params,
        *dst_p,
        unit,
        *delta_params,
        *dst_p,
    ]
    # A live selection of one table: a bitmap scan reads each page once (see `_fetch_aggregate`).
    return [(f, v, b, int(n)) for f, v, b, n in _fetch_aggregate(sql, params, bitmap=live is not None)]


def facet_value(name: str, text: str | None) -> Any:
    """A summary value back to the facet's type (ints; '' queue → None)."""
    if text is None:
        return None
    if name in rollup_sql.INT_FACETS:
        return int(text)
    if name == "computingsite" and text == "":
        return None
    return text


# --- /dash/ ---------------------------------------------------------------------------------------


def queue_state_rows(window: Window, *, states: Sequence[str]) -> list[tuple[str, str, int]]:
    """(queue, jobstatus, count) of the window's jobs in `states` that have a queue: edges scanned
    (job_window_summary_idx, index-only), whole hours from the summary's computingsite facet."""
    edge_where, edge_params = window.edges_sql("statechangetime")
    hours_where, hours_params = window.hours_sql("bucket")
    delta_where, delta_params = window.hours_sql("statechangetime")
    sql = f"""
        SELECT queue, jobstatus, SUM(n) FROM (
            SELECT computingsite AS queue, jobstatus, COUNT(*) AS n FROM {_job_table(window)} j
            WHERE {edge_where} AND jobstatus = ANY(%s) AND computingsite IS NOT NULL GROUP BY 1, 2
            UNION ALL
            SELECT value, jobstatus, count FROM pandamon_jobsummary
            WHERE {hours_where} AND facet = 'computingsite' AND jobstatus = ANY(%s) AND value <> ''
            UNION ALL
            SELECT computingsite, jobstatus, delta FROM dispatcher_jobchange
            WHERE {delta_where} AND jobstatus = ANY(%s) AND computingsite <> ''
        ) t GROUP BY 1, 2 HAVING SUM(n) <> 0
    """  # noqa: S608  (constant names and placeholders only)
    states = list(states)
    params = [*edge_params, states, *hours_params, states, *delta_params, states]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(q, s, int(n)) for q, s, n in cursor.fetchall()]


# --- /errors/ and a task's top errors -------------------------------------------------------------


@dataclass
class ErrorRows:
    groups: list[tuple[str, int, str, int, int | None, int | None, str | None, int]]
    over_time: list[tuple[datetime, str, int, int]]
    splits: list[tuple[str, Any, int, int]]
    attempts: int | None = None
    core_s: int = 0  # walltime × cores of the failed attempts, each once


def _split_sql(
    split: bool, hours: tuple[str, list[Any]], deltas: tuple[str, list[Any]]
) -> tuple[str, list[Any], str]:
    """The /errors/ split: CTEs to follow `edge` (with their parameters) and a UNION ALL to end the
    statement. Each failed attempt counts once per dimension (its queue, task and user), from the
    edge, the per-dimension summary within `hours` and the unfolded changes within `deltas`; with
    `split` the workflows are summed from the tasks. Without `split` only the queue dimension is
    read: its sum is the total."""
    dims = list(rollup_sql.ERROR_SPLIT_DIMS if split else ("site",))
    edge = rollup_sql.error_split_values("e.computingsite", "e.job_task", "e.produsername")
    delta = rollup_sql.error_split_values("d.computingsite", "d.jeditaskid", "d.produsername")
    ctes = f"""split_src AS (
            SELECT v.dim, v.value, 1 AS n, e.core_s AS c
            FROM edge e CROSS JOIN LATERAL (VALUES {edge}) AS v(dim, value) WHERE v.dim = ANY(%s)
            UNION ALL
            SELECT s.dim, s.value, s.count, s.core_s FROM pandamon_errorsplitsummary s
            WHERE {hours[0]} AND s.dim = ANY(%s)
            UNION ALL
            SELECT v.dim, v.value, d.delta, d.delta * d.core_s
            FROM dispatcher_failedattemptchange d CROSS JOIN LATERAL (VALUES {delta}) AS v(dim, value)
            WHERE v.dim = ANY(%s) AND {deltas[0]}
        ), split AS (
            SELECT dim, value, SUM(n) AS n, SUM(c) AS c FROM split_src GROUP BY dim, value
            HAVING SUM(n) <> 0
        )"""  # noqa: S608  (constant names and placeholders only)
    select = """
        UNION ALL
        SELECT 's', 1, 1, NULL, NULL, NULL, NULL, dim, value, n, c, NULL, NULL, NULL FROM split"""
    if split:
        # A task that no longer exists has no workflow row.
        select += """
        UNION ALL
        SELECT 's', 1, 1, NULL, NULL, NULL, NULL, 'workflow', tk.workflow_id::text, SUM(s.n), SUM(s.c),
               NULL, NULL, NULL
        FROM split s
        JOIN dispatcher_task tk ON tk.jeditaskid = CASE WHEN s.dim = 'task' THEN s.value::bigint END
        GROUP BY tk.workflow_id"""
    return ctes, [dims, *hours[1], dims, dims, *deltas[1]], select


def error_rows(
    window: Window | None,
    *,
    unit: str,
    split: bool,
    jeditaskid: int | None = None,
    live: LiveSelection | None = None,
    count_attempts: bool = True,
    archive: bool = False,
) -> ErrorRows:
    """The failed attempts of a window (or of all time with `window` None), for `/errors/`, or with
    `live` those of that selection of attempts (scanned, nothing from the summaries):

    * groups: (family, code, template, count, newest pandaid, oldest pandaid, example diag);
    * over time: (bucket, family, code, count);
    * with `split`, ('site'|'task'|'user'|'workflow', value, count, core-seconds), one count per
      attempt in each;
    * attempts: how many failed attempts (with or without an error code; an attempt with codes in
      several families is one attempt), None when neither `split` nor `count_attempts` asked it.

    One statement: the edges scanned from the attempts (templates masked here: a few thousand rows
    an hour), the whole hours from the summaries, the unfolded deltas masked on the fly. The edges
    read the archived attempts and jobs too when they reach the archive's horizon, a live
    selection when `archive` says it holds archived attempts.
    """
    archive = archive or _job_table(window) != "dispatcher_job"
    source, source_params = _live_source(
        live, attempts_with_archive_sql() if archive else "dispatcher_jobattempt"
    )
    jobs = jobs_with_archive_sql() if archive else "dispatcher_job"
    edge_params: list[Any] = []
    hours_params: list[Any] = []
    delta_params: list[Any] = []
    if window is None and live is None:
        edge_where, hours_where, delta_where = "FALSE", "TRUE", "TRUE"
    else:
        (edge_where, edge_params), (hours_where, hours_params), (delta_where, delta_params) = _cut(
            window, live, "a.endtime", "s.bucket", "d.endtime"
        )
    task_j, task_jp = ("j.jeditaskid = %s", [jeditaskid]) if jeditaskid is not None else ("TRUE", [])
    task_s, task_sp = ("s.jeditaskid = %s", [jeditaskid]) if jeditaskid is not None else ("TRUE", [])
    task_d, task_dp = ("d.jeditaskid = %s", [jeditaskid]) if jeditaskid is not None else ("TRUE", [])
    tmpl_sql, tmpl_params = template_expression("diag")
    split_ctes, split_select = "", ""
    split_params: list[Any] = []
    if split or count_attempts:
        if jeditaskid is not None:
            raise ValueError("the error split is not kept per task")
        split_ctes, split_params, split_select = _split_sql(
            split, (hours_where, hours_params), (delta_where, delta_params)
        )
        split_ctes = f", {split_ctes}"
    sql = f"""
        WITH edge AS (
            SELECT a.*, j.jeditaskid AS job_task, j.produsername, date_trunc(%s, a.endtime) AS t_bucket,
                   {rollup_sql.ATTEMPT_CORE_S_SQL.format(alias="a")} AS core_s
            FROM {source} a JOIN {jobs} j ON j.pandaid = a.job_id
            WHERE a.jobstatus = 'failed' AND {edge_where} AND {task_j}
        ), fam AS (
            SELECT e.job_id, e.t_bucket, 1 AS delta, e.core_s, v.family, v.code, v.diag FROM edge e
            CROSS JOIN LATERAL (VALUES {rollup_sql.error_explode_values("e")}) AS v(family, code, diag)
            WHERE v.code <> 0
            UNION ALL
            SELECT d.job_id, date_trunc(%s, d.endtime), d.delta, d.delta * d.core_s, v.family, v.code,
                   v.diag
            FROM dispatcher_failedattemptchange d
            CROSS JOIN LATERAL (VALUES {rollup_sql.error_explode_values("d")}) AS v(family, code, diag)
            WHERE v.code <> 0 AND {delta_where} AND {task_d}
        ), src AS (
            SELECT 'g' AS kind, family, code, {tmpl_sql} AS tmpl, NULL::timestamptz AS bucket,
                   delta AS n, core_s AS c,
                   CASE WHEN delta > 0 THEN job_id END AS newest,
                   CASE WHEN delta > 0 THEN job_id END AS oldest,
                   CASE WHEN delta > 0 THEN diag END AS example
            FROM fam
            UNION ALL
            SELECT 't', family, code, NULL, t_bucket, delta, core_s, NULL, NULL, NULL FROM fam
            UNION ALL
            SELECT 'g', s.family, s.code, s.template, NULL, s.count, s.core_s, s.newest, s.oldest,
                   s.example
            FROM pandamon_errorsummary s WHERE {hours_where} AND {task_s}
            UNION ALL
            SELECT 't', s.family, s.code, NULL, date_trunc(%s, s.bucket), s.count, s.core_s, NULL, NULL,
                   NULL
            FROM pandamon_errorsummary s WHERE {hours_where} AND {task_s}
        ){split_ctes}
        SELECT kind, GROUPING(tmpl), GROUPING(bucket), family, code, tmpl, bucket, NULL, NULL,
               SUM(n), SUM(c), MAX(newest), MIN(oldest), MIN(example)
        FROM src
        GROUP BY GROUPING SETS ((kind, family, code, tmpl), (kind, bucket, family, code))
        HAVING SUM(n) <> 0{split_select}
    """  # noqa: S608  (constant names and placeholders only)
    params: list[Any] = [
        unit,
        *source_params,
        *edge_params,
        *task_jp,
        unit,
        *delta_params,
        *task_dp,
        *tmpl_params,
        *hours_params,
        *task_sp,
        unit,
        *hours_params,
        *task_sp,
    ]
    params += split_params
    result = ErrorRows(groups=[], over_time=[], splits=[], attempts=0 if split or count_attempts else None)
    for row in _fetch_aggregate(sql, params):
        kind, g_tmpl, g_bucket, family, code, tmpl, bucket, dim, value, n, c, newest, oldest, example = row
        core_s = int(c or 0)
        if kind == "g" and g_tmpl == 0:
            result.groups.append((family, int(code), tmpl, int(n), newest, oldest, example, core_s))
        elif kind == "t" and g_bucket == 0:
            result.over_time.append((bucket, family, int(code), int(n)))
        elif kind == "s":
            if dim == "site":
                result.attempts = (result.attempts or 0) + int(n)
                result.core_s += core_s
            if split:
                key = int(value) if dim in ("task", "workflow") else value
                result.splits.append((dim, key, int(n), core_s))
    return result


# --- fold, backfill, rebuild ----------------------------------------------------------------------


# The tables whose zero rows a job fold returns, in the order it returns their ids.
_FOLDED_JOB_TABLES = (
    "pandamon_jobsummary",
    rollup_sql.FILTER_SUMMARY_TABLE,
    rollup_sql.FILTER_DAY_SUMMARY_TABLE,
)


def rollups_fold(*, batch: int = 50_000, errors: bool = True, days: bool = True) -> int:
    """Fold up to `batch` job changes and `batch` failed-attempt changes of the engine's change feed
    (`dispatcher/changefeed.py`) into the summaries; returns how many change rows were folded. The
    "monitor" loop runs it (pandamon/apps.py registers it). The monitor is the feed's one reader:
    what it folds it deletes. `errors` False folds the job changes only and leaves the failed
    attempts in the feed: for migrations of the job summaries that run before the error summaries
    have this version's schema (pandamon 0005, 0006); `days` False leaves out the filter summary's
    day level, which those migrations run before (it comes with 0008).

    1. Under an advisory lock (folds never interleave), one DELETE … RETURNING per change table
       feeding the upserts: a change committed meanwhile is folded now or next time, never lost.
    2. The summary rows the upserts brought to zero are deleted, by the ids the upserts returned
       (a busy hour's or day's rows are too many to look through on every fold).
    """
    if not enabled():
        return 0
    tmpl_sql, tmpl_params = template_expression("diag")
    fold_errors = rollup_sql.FOLD_ERRORS.format(
        explode=rollup_sql.error_explode_values("m"),
        template=tmpl_sql,
        split=rollup_sql.error_split_values("m.computingsite", "m.jeditaskid", "m.produsername"),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(*fold_lock_sql())
        cursor.execute(rollup_sql.FOLD_JOBS if days else rollup_sql.FOLD_JOBS_HOURS, [batch])
        jobs, *zero_ids = cursor.fetchone()
        for table, ids in zip(_FOLDED_JOB_TABLES, zero_ids, strict=True):
            if ids:
                cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s) AND count = 0", [ids])  # noqa: S608  (a constant name)
        if not errors:
            return int(jobs)
        cursor.execute(fold_errors, [batch, *tmpl_params])
        folded_errors, error_buckets = cursor.fetchone()
        if error_buckets:
            cursor.execute(
                "DELETE FROM pandamon_errorsummary WHERE bucket = ANY(%s) AND count = 0", [error_buckets]
            )
            cursor.execute(
                "DELETE FROM pandamon_errorsplitsummary WHERE bucket = ANY(%s) AND count = 0",
                [error_buckets],
            )
    return int(jobs) + int(folded_errors)


def rollups_backfill(cursor: Any, *, core_seconds: bool = True, keyed_split: bool = False) -> None:
    """Fill the empty summaries from the job and attempt rows, one pass each (GROUPING SETS for
    the job facets). The caller holds the tables still (a migration's lock, or `rollups_rebuild`'s).
    For the schemas of older migrations: `core_seconds` False, the error summaries as migration
    0001 made them (no `core_s` column yet); `keyed_split`, the /errors/ split as migrations before
    0007 keep it (`pandamon_errorattemptsummary`, per hour, queue, task and user)."""
    core_col = ", core_s" if core_seconds else ""
    tmpl_sql, tmpl_params = template_expression("diag")
    attempt_core = rollup_sql.ATTEMPT_CORE_S_SQL.format(alias="a")
    cursor.execute("SET LOCAL work_mem = '256MB'")
    cursor.execute(rollup_sql.BACKFILL_JOBS)
    cursor.execute(
        rollup_sql.BACKFILL_ERRORS.format(
            template=tmpl_sql,
            explode=rollup_sql.error_explode_values("a"),
            core_col=core_col,
            core_sum=", SUM(core_s)" if core_seconds else "",
            core_expr=attempt_core,
        ),
        tmpl_params,
    )
    if keyed_split:
        cursor.execute(
            rollup_sql.BACKFILL_ERROR_ATTEMPTS_KEYED.format(
                core_col=core_col, core_sum=f", SUM({attempt_core})" if core_seconds else ""
            )
        )
    else:
        cursor.execute(rollup_sql.BACKFILL_ERROR_ATTEMPTS.format(core_expr=attempt_core))


def backfill_job_filters(cursor: Any, dims: Sequence[str] = rollup_sql.FILTER_SUMMARY_DIMS) -> None:
    """Fill the filter summary's empty `dims` from the job rows, one pass per dimension or pair
    (the caller holds the job table still, as for `rollups_backfill`)."""
    cursor.execute("SET LOCAL work_mem = '256MB'")
    for dim in dims:
        cursor.execute(rollup_sql.backfill_job_filters_sql(dim))


def backfill_job_filter_days(cursor: Any) -> None:
    """Fill the filter summary's empty day level from its hours (decision 0019)."""
    cursor.execute("SET LOCAL work_mem = '256MB'")
    cursor.execute(rollup_sql.BACKFILL_JOB_FILTER_DAYS)


def rollups_rebuild() -> None:
    """Truncate the summaries and the change feed and backfill the summaries, in one transaction:
    writers of jobs and attempts wait on a SHARE lock meanwhile (readers do not), so no change is
    lost or counted twice. The backfill counts every change recorded so far, so the feed is emptied
    with the summaries (the monitor is its one reader)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatcher_job, dispatcher_jobattempt IN SHARE MODE")
        tables = [
            *rollup_sql.SUMMARY_TABLES,
            rollup_sql.FILTER_SUMMARY_TABLE,
            rollup_sql.FILTER_DAY_SUMMARY_TABLE,
            *changefeed.TABLES,
        ]
        cursor.execute(f"TRUNCATE {', '.join(tables)}")
        rollups_backfill(cursor)
        backfill_job_filters(cursor)
        backfill_job_filter_days(cursor)


def monitor_one_batch(*, limit: int = 50_000, now: datetime | None = None) -> int:
    """The "monitor" loop's step (config/loops.py): one bounded fold. `now` is accepted for
    symmetry with the other loops."""
    return rollups_fold(batch=limit)
