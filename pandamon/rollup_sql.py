"""The SQL of the monitor rollups (decision 0003), PostgreSQL only: the fold of the engine's change
feed (`dispatcher_jobchange`, `dispatcher_failedattemptchange`; `dispatcher/changefeed.py`,
decision 0006) into the summaries, and the backfill from the job and attempt rows. Built once from
constant column lists; no value is ever interpolated.

Bucket: the UTC hour of the job's `statechangetime` (of the attempt's `endtime` for errors),
`date_trunc('hour', t, 'UTC')`, so a fold run from any session time zone files a row alike; the
filter summary's day level (decision 0019) the UTC day, `date_trunc('day', t, 'UTC')`.
"""

# ruff: noqa: S608  (the module is SQL built from the constant column lists above; no values)
from __future__ import annotations

from dispatcher.changefeed import ATTEMPT_CORE_S_SQL, JOB_FACET_COLUMNS
from dispatcher.retry import FAMILY_COLUMNS

__all__ = [
    "ATTEMPT_CORE_S_SQL",
    "BACKFILL_ERRORS",
    "BACKFILL_ERROR_ATTEMPTS",
    "BACKFILL_ERROR_ATTEMPTS_KEYED",
    "BACKFILL_JOBS",
    "BACKFILL_JOB_FILTERS",
    "BACKFILL_JOB_FILTER_DAYS",
    "ERROR_FAMILIES",
    "ERROR_SPLIT_DIMS",
    "FILTER_DIMENSIONS",
    "FILTER_DAY_SUMMARY_TABLE",
    "FILTER_PAIRS",
    "FILTER_SUMMARY_DIMS",
    "FILTER_SUMMARY_TABLE",
    "FOLD_ERRORS",
    "FOLD_JOBS",
    "FOLD_JOBS_HOURS",
    "INT_FACETS",
    "JOB_FACET_COLUMNS",
    "SUMMARY_TABLES",
    "backfill_job_filters_sql",
    "error_explode_values",
    "error_split_values",
    "filter_dim_value_sql",
    "filter_explode_values",
    "job_explode_values",
    "job_facet_value_sql",
    "pair_value",
]

# The facets of `dispatcher.changefeed.JOB_FACET_COLUMNS` whose values are integers (the summary
# keeps every value as text).
INT_FACETS = frozenset(
    {"jeditaskid", "workflow", "attemptnr", "piloterrorcode", "exeerrorcode", "ddmerrorcode", "transexitcode"}
)


def job_facet_value_sql(alias: str, name: str) -> str:
    """The facet `name` of the row `alias` as the summary's text value (NULL queue → '')."""
    column = JOB_FACET_COLUMNS[name]
    if column == "computingsite":
        return f"COALESCE({alias}.computingsite, '')"
    if name in INT_FACETS:
        return f"{alias}.{column}::text"
    return f"{alias}.{column}"


def job_explode_values(alias: str) -> str:
    """LATERAL VALUES turning one change/job row of `alias` into (facet, value) rows."""
    return ", ".join(f"('{name}', {job_facet_value_sql(alias, name)})" for name in JOB_FACET_COLUMNS)


# The facets a shifter filters /jobs/ on that have their own summary (`JobFilterSummary`, decision
# 0013): the queue (a site or a region is a set of queues), the user, the label, the task.
FILTER_DIMENSIONS: tuple[str, ...] = ("computingsite", "produsername", "label", "jeditaskid")

# The pairs of dimensions a shifter filters on together (decision 0016): the queue (a site, a
# region) with the label, and with the user. A pair's `dimvalue` is `pair_value(queue, other)`.
FILTER_PAIRS: dict[str, tuple[str, str]] = {
    "queue+label": ("computingsite", "label"),
    "queue+user": ("computingsite", "produsername"),
}
# Every `dim` of the filter summary: what the fold explodes a change into and the backfill fills.
FILTER_SUMMARY_DIMS: tuple[str, ...] = (*FILTER_DIMENSIONS, *FILTER_PAIRS)


def pair_value(first: str, second: str) -> str:
    """A pair's `dimvalue`: the first value's length, ':', both values. Unambiguous whatever the
    values hold (a separator could occur in a value); `filter_dim_value_sql` writes the same."""
    return f"{len(first)}:{first}{second}"


def filter_dim_value_sql(alias: str, dim: str) -> str:
    """The `dimvalue` of the row `alias` for `dim` (a FILTER_DIMENSIONS name or a FILTER_PAIRS key)."""
    if dim not in FILTER_PAIRS:
        return job_facet_value_sql(alias, dim)
    first, second = (job_facet_value_sql(alias, name) for name in FILTER_PAIRS[dim])
    # length() counts characters, as Python's len() does.
    return f"(length({first})::text || ':' || {first} || {second})"


def filter_explode_values(alias: str) -> str:
    """LATERAL VALUES turning one change/job row of `alias` into (dim, dimvalue) rows."""
    return ", ".join(f"('{dim}', {filter_dim_value_sql(alias, dim)})" for dim in FILTER_SUMMARY_DIMS)


# Error families (the engine's, `dispatcher.retry.FAMILY_COLUMNS`): (family, code column, diag
# column or None), the same columns on the attempt rows and the change rows.
ERROR_FAMILIES: tuple[tuple[str, str, str | None], ...] = tuple(
    (family, code, diag) for family, (code, diag) in FAMILY_COLUMNS.items()
)


def error_explode_values(alias: str) -> str:
    """LATERAL VALUES turning one attempt/change row into (family, code, diag) rows."""
    return ", ".join(
        f"('{family}', {alias}.{code}, {f'{alias}.{diag}' if diag else chr(39) * 2})"
        for family, code, diag in ERROR_FAMILIES
    )


# The dimensions of the /errors/ split (`ErrorSplitSummary`): a failed attempt counts once in each,
# its queue ('site'), its task and its user.
ERROR_SPLIT_DIMS: tuple[str, ...] = ("site", "task", "user")


def error_split_values(site: str, task: str, user: str) -> str:
    """LATERAL VALUES turning one failed attempt (its queue, task and user expressions) into
    (dim, value) rows, one per ERROR_SPLIT_DIMS."""
    return f"('site', {site}), ('task', ({task})::text), ('user', {user})"


# --- fold -----------------------------------------------------------------------------------------

# The change rows' facet columns, in JOB_FACET_COLUMNS's order.
_FACET_COLUMN_LIST = ", ".join(JOB_FACET_COLUMNS.values())

# Each fold: one DELETE … RETURNING of the oldest `batch` change rows feeding the upserts (decision
# 0002's pattern), then the ids of the rows the upserts brought to zero, which the caller deletes:
# of the summary, of the filter summary and of its day level (an hour of a busy day holds hundreds
# of thousands of rows, too many to look through on every fold). %s: the batch.
# The rows are first added up per hour and facet tuple (`tuples`): the jobs of one task moving
# between the same states within the hour share a tuple, and a job leaving a state cancels
# another's entering it, so fewer rows are exploded into the 78 (dimension, facet) combinations;
# a tuple whose sum is zero changes no count.
_FOLD_JOBS = f"""
    WITH moved AS (
        DELETE FROM dispatcher_jobchange
        WHERE id IN (SELECT id FROM dispatcher_jobchange ORDER BY id LIMIT %s)
        RETURNING *
    ), tuples AS (
        SELECT date_trunc('hour', statechangetime, 'UTC') AS bucket, {_FACET_COLUMN_LIST},
               SUM(delta) AS delta
        FROM moved GROUP BY bucket, {_FACET_COLUMN_LIST} HAVING SUM(delta) <> 0
    ), summed AS (
        SELECT m.bucket, m.jobstatus, v.facet, v.value, SUM(m.delta) AS n
        FROM tuples m CROSS JOIN LATERAL (VALUES {job_explode_values("m")}) AS v(facet, value)
        GROUP BY 1, 2, 3, 4
    ), upserted AS (
        INSERT INTO pandamon_jobsummary (bucket, jobstatus, facet, value, count)
        SELECT bucket, jobstatus, facet, value, n FROM summed WHERE n <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (bucket, jobstatus, facet, value)
        DO UPDATE SET count = pandamon_jobsummary.count + EXCLUDED.count
        RETURNING id, count
    ), summed_filters AS (
        SELECT m.bucket, m.jobstatus, d.dim, d.dimvalue, v.facet, v.value, SUM(m.delta) AS n
        FROM tuples m
        CROSS JOIN LATERAL (VALUES {filter_explode_values("m")}) AS d(dim, dimvalue)
        CROSS JOIN LATERAL (VALUES {job_explode_values("m")}) AS v(facet, value)
        GROUP BY 1, 2, 3, 4, 5, 6
    ), upserted_filters AS (
        INSERT INTO pandamon_jobfiltersummary (bucket, jobstatus, dim, dimvalue, facet, value, count)
        SELECT * FROM summed_filters WHERE n <> 0 ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (bucket, jobstatus, dim, dimvalue, facet, value)
        DO UPDATE SET count = pandamon_jobfiltersummary.count + EXCLUDED.count
        RETURNING id, count
    ){{days_ctes}}
    SELECT (SELECT COUNT(*) FROM moved), (SELECT array_agg(id) FROM upserted WHERE count = 0),
           (SELECT array_agg(id) FROM upserted_filters WHERE count = 0){{days_zero}}
"""
# The day level of the filter summary (`JobFilterDaySummary`, decision 0019): the hours' sums added
# up per UTC day, the state facet left out (the chart reads it per hour).
_FOLD_FILTER_DAYS = """, summed_days AS (
        SELECT date_trunc('day', bucket, 'UTC') AS bucket, jobstatus, dim, dimvalue, facet, value,
               SUM(n) AS n
        FROM summed_filters WHERE facet <> 'jobstatus' GROUP BY 1, 2, 3, 4, 5, 6
    ), upserted_days AS (
        INSERT INTO pandamon_jobfilterdaysummary (bucket, jobstatus, dim, dimvalue, facet, value, count)
        SELECT * FROM summed_days WHERE n <> 0 ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (bucket, jobstatus, dim, dimvalue, facet, value)
        DO UPDATE SET count = pandamon_jobfilterdaysummary.count + EXCLUDED.count
        RETURNING id, count
    )"""
FOLD_JOBS = _FOLD_JOBS.format(
    days_ctes=_FOLD_FILTER_DAYS,
    days_zero=", (SELECT array_agg(id) FROM upserted_days WHERE count = 0)",
)
# The fold as pandamon migrations 0005 and 0006 run it, before the day level exists: no day ids.
FOLD_JOBS_HOURS = _FOLD_JOBS.format(days_ctes="", days_zero=", NULL::bigint[]")

# %s: the batch, then the template expression's parameters; {explode}, {template} and {split} are
# filled with error_explode_values('m'), the template expression of `diag` and
# error_split_values of m's queue, task and user.
FOLD_ERRORS = """
    WITH moved AS (
        DELETE FROM dispatcher_failedattemptchange
        WHERE id IN (SELECT id FROM dispatcher_failedattemptchange ORDER BY id LIMIT %s)
        RETURNING *
    ), fam AS (
        SELECT date_trunc('hour', m.endtime, 'UTC') AS bucket, m.jeditaskid, m.job_id, m.delta,
               m.delta * m.core_s AS core_s, v.family, v.code, v.diag
        FROM moved m CROSS JOIN LATERAL (VALUES {explode}) AS v(family, code, diag)
        WHERE v.code <> 0
    ), grouped AS (
        SELECT bucket, family, code, {template} AS template, jeditaskid, SUM(delta) AS n,
               SUM(core_s) AS core_s,
               MAX(job_id) FILTER (WHERE delta > 0) AS newest,
               MIN(job_id) FILTER (WHERE delta > 0) AS oldest,
               MIN(diag) FILTER (WHERE delta > 0) AS example
        FROM fam GROUP BY 1, 2, 3, 4, 5
    ), up_groups AS (
        INSERT INTO pandamon_errorsummary
            (bucket, family, code, template, jeditaskid, count, core_s, newest, oldest, example)
        SELECT * FROM grouped WHERE n <> 0 OR newest IS NOT NULL ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket, family, code, template, jeditaskid) DO UPDATE SET
            count = pandamon_errorsummary.count + EXCLUDED.count,
            core_s = pandamon_errorsummary.core_s + EXCLUDED.core_s,
            newest = GREATEST(pandamon_errorsummary.newest, EXCLUDED.newest),
            oldest = LEAST(pandamon_errorsummary.oldest, EXCLUDED.oldest),
            example = LEAST(pandamon_errorsummary.example, EXCLUDED.example)
    ), attempts AS (
        SELECT date_trunc('hour', m.endtime, 'UTC') AS bucket, s.dim, s.value,
               SUM(m.delta) AS n, SUM(m.delta * m.core_s) AS core_s
        FROM moved m CROSS JOIN LATERAL (VALUES {split}) AS s(dim, value)
        GROUP BY 1, 2, 3
    ), up_attempts AS (
        INSERT INTO pandamon_errorsplitsummary (bucket, dim, value, count, core_s)
        SELECT * FROM attempts WHERE n <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (bucket, dim, value)
        DO UPDATE SET count = pandamon_errorsplitsummary.count + EXCLUDED.count,
                      core_s = pandamon_errorsplitsummary.core_s + EXCLUDED.core_s
    )
    SELECT (SELECT COUNT(*) FROM moved), (SELECT array_agg(DISTINCT bucket) FROM attempts)
"""

# --- backfill -------------------------------------------------------------------------------------

# One pass over dispatcher_job: GROUPING SETS gives every facet per (bucket, jobstatus).
_SETS = ", ".join(
    f"(bucket, jobstatus, {'f_' + name})" if name != "jobstatus" else "(bucket, jobstatus)"
    for name in JOB_FACET_COLUMNS
)
_FACET_CASE = " ".join(
    f"WHEN GROUPING(f_{name}) = 0 THEN '{name}'" for name in JOB_FACET_COLUMNS if name != "jobstatus"
)
_VALUE_CASE = " ".join(
    f"WHEN GROUPING(f_{name}) = 0 THEN f_{name}" for name in JOB_FACET_COLUMNS if name != "jobstatus"
)
_BACKFILL_COLS = ", ".join(
    f"{job_facet_value_sql('j', name)} AS f_{name}" for name in JOB_FACET_COLUMNS if name != "jobstatus"
)
BACKFILL_JOBS = f"""
    INSERT INTO pandamon_jobsummary (bucket, jobstatus, facet, value, count)
    SELECT bucket, jobstatus,
           CASE {_FACET_CASE} ELSE 'jobstatus' END,
           CASE {_VALUE_CASE} ELSE jobstatus END,
           COUNT(*)
    FROM (
        SELECT date_trunc('hour', j.statechangetime, 'UTC') AS bucket, j.jobstatus, {_BACKFILL_COLS}
        FROM dispatcher_job j WHERE j.statechangetime IS NOT NULL
    ) t
    GROUP BY GROUPING SETS ({_SETS})
"""

# One pass over dispatcher_job per filter dimension ({dim} and {dimvalue}: a FILTER_SUMMARY_DIMS
# name and its value expression on `j`), every facet per (bucket, jobstatus, dimension value).
_FILTER_SETS = ", ".join(
    f"(bucket, jobstatus, dimvalue, {'f_' + name})"
    if name != "jobstatus"
    else "(bucket, jobstatus, dimvalue)"
    for name in JOB_FACET_COLUMNS
)
BACKFILL_JOB_FILTERS = f"""
    INSERT INTO pandamon_jobfiltersummary (bucket, jobstatus, dim, dimvalue, facet, value, count)
    SELECT bucket, jobstatus, '{{dim}}', dimvalue,
           CASE {_FACET_CASE} ELSE 'jobstatus' END,
           CASE {_VALUE_CASE} ELSE jobstatus END,
           COUNT(*)
    FROM (
        SELECT date_trunc('hour', j.statechangetime, 'UTC') AS bucket, j.jobstatus,
               {{dimvalue}} AS dimvalue, {_BACKFILL_COLS}
        FROM dispatcher_job j WHERE j.statechangetime IS NOT NULL
    ) t
    GROUP BY GROUPING SETS ({_FILTER_SETS})
"""


def backfill_job_filters_sql(dim: str) -> str:
    """BACKFILL_JOB_FILTERS for one dimension."""
    return BACKFILL_JOB_FILTERS.format(dim=dim, dimvalue=filter_dim_value_sql("j", dim))


# %s: the template expression's parameters. {core_col} and {core_sum} are ", core_s" and
# ", SUM(core_s)" (", SUM(<ATTEMPT_CORE_S_SQL of a>)" for the attempts), or empty for a summary
# table of before pandamon migration 0004.
BACKFILL_ERRORS = """
    INSERT INTO pandamon_errorsummary
        (bucket, family, code, template, jeditaskid, count{core_col}, newest, oldest, example)
    SELECT bucket, family, code, {template}, jeditaskid, COUNT(*){core_sum}, MAX(job_id), MIN(job_id),
           MIN(diag)
    FROM (
        SELECT date_trunc('hour', a.endtime, 'UTC') AS bucket, j.jeditaskid, a.job_id,
               {core_expr} AS core_s, v.family, v.code, v.diag
        FROM dispatcher_jobattempt a JOIN dispatcher_job j ON j.pandaid = a.job_id
        CROSS JOIN LATERAL (VALUES {explode}) AS v(family, code, diag)
        WHERE a.jobstatus = 'failed' AND v.code <> 0
    ) t
    GROUP BY 1, 2, 3, 4, 5
"""
BACKFILL_ERROR_ATTEMPTS = f"""
    INSERT INTO pandamon_errorsplitsummary (bucket, dim, value, count, core_s)
    SELECT date_trunc('hour', a.endtime, 'UTC'), s.dim, s.value, COUNT(*), SUM({{core_expr}})
    FROM dispatcher_jobattempt a JOIN dispatcher_job j ON j.pandaid = a.job_id
    CROSS JOIN LATERAL (VALUES {error_split_values("a.computingsite", "j.jeditaskid", "j.produsername")})
        AS s(dim, value)
    WHERE a.jobstatus = 'failed'
    GROUP BY 1, 2, 3
"""
# The split as pandamon migrations 0001–0006 keep it (one row per hour, queue, task and user), for
# those migrations' backfill; migration 0007 moves it to `pandamon_errorsplitsummary`.
BACKFILL_ERROR_ATTEMPTS_KEYED = """
    INSERT INTO pandamon_errorattemptsummary (bucket, computingsite, jeditaskid, produsername, count{core_col})
    SELECT date_trunc('hour', a.endtime, 'UTC'), a.computingsite, j.jeditaskid, j.produsername, COUNT(*)
           {core_sum}
    FROM dispatcher_jobattempt a JOIN dispatcher_job j ON j.pandaid = a.job_id
    WHERE a.jobstatus = 'failed'
    GROUP BY 1, 2, 3, 4
"""
# The day level filled from the hours (decision 0019): each day's rows are the sums of its hours'.
BACKFILL_JOB_FILTER_DAYS = """
    INSERT INTO pandamon_jobfilterdaysummary (bucket, jobstatus, dim, dimvalue, facet, value, count)
    SELECT date_trunc('day', bucket, 'UTC'), jobstatus, dim, dimvalue, facet, value, SUM(count)
    FROM pandamon_jobfiltersummary WHERE facet <> 'jobstatus'
    GROUP BY 1, 2, 3, 4, 5, 6 HAVING SUM(count) <> 0
"""
SUMMARY_TABLES = ("pandamon_jobsummary", "pandamon_errorsummary", "pandamon_errorsplitsummary")
# Since pandamon migration 0005 (older migrations truncate and refill SUMMARY_TABLES only).
FILTER_SUMMARY_TABLE = "pandamon_jobfiltersummary"
# Since pandamon migration 0008.
FILTER_DAY_SUMMARY_TABLE = "pandamon_jobfilterdaysummary"
