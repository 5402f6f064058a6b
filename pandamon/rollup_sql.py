"""The SQL of the monitor rollups (decision 0003), PostgreSQL only: trigger functions and triggers,
the fold and the backfill. Built once from constant column lists; no value is ever interpolated.

Bucket: the UTC hour of the job's `statechangetime` (of the attempt's `endtime` for errors),
`date_trunc('hour', t, 'UTC')`, so a fold run from any session time zone files a row alike.
"""

# ruff: noqa: S608  (the module is SQL built from the constant column lists above; no values)
from __future__ import annotations

# Facet name (pandamon.queries.JOB_FACETS) → column of dispatcher_job, of the delta table and the
# SQL giving its text value in the summary (NULL queue → '', the summary's value is NOT NULL).
JOB_FACET_COLUMNS: dict[str, str] = {
    "jobstatus": "jobstatus",
    "computingsite": "computingsite",
    "produsername": "produsername",
    "label": "label",
    "jeditaskid": "jeditaskid",
    "workflow": "workflow_id",
    "attemptnr": "attemptnr",
    "resourcetype": "resource_type",
    "prodsourcelabel": "prodsourcelabel",
    "piloterrorcode": "piloterrorcode",
    "exeerrorcode": "exeerrorcode",
    "ddmerrorcode": "ddmerrorcode",
    "transexitcode": "transexitcode",
}
INT_FACETS = frozenset(
    {"jeditaskid", "workflow", "attemptnr", "piloterrorcode", "exeerrorcode", "ddmerrorcode", "transexitcode"}
)
# Delta columns in order: the time, then every facet column.
_JOB_DELTA_COLS = ["statechangetime", *JOB_FACET_COLUMNS.values()]


def job_facet_value_sql(alias: str, name: str) -> str:
    """The facet `name` of the row `alias` as the summary's text value (NULL queue → '')."""
    column = JOB_FACET_COLUMNS[name]
    if column == "computingsite":
        return f"COALESCE({alias}.computingsite, '')"
    if name in INT_FACETS:
        return f"{alias}.{column}::text"
    return f"{alias}.{column}"


def _job_tuple(alias: str, prefix: str = "") -> str:
    """The delta row of the job row `alias` (columns named `prefix` + column): its time and raw
    facet columns (NULL queue → '')."""
    return ", ".join(
        [f"{alias}.{prefix}statechangetime"]
        + [
            f"COALESCE({alias}.{prefix}{c}, '')" if c == "computingsite" else f"{alias}.{prefix}{c}"
            for c in JOB_FACET_COLUMNS.values()
        ]
    )


def job_explode_values(alias: str) -> str:
    """LATERAL VALUES turning one delta/job row of `alias` into (facet, value) rows."""
    return ", ".join(f"('{name}', {job_facet_value_sql(alias, name)})" for name in JOB_FACET_COLUMNS)


# Error families (pandamon.queries._FAMILIES): family → (code column, diag column or None).
ERROR_FAMILIES: tuple[tuple[str, str, str | None], ...] = (
    ("pilot", "piloterrorcode", "piloterrordiag"),
    ("exe", "exeerrorcode", "exeerrordiag"),
    ("trans", "transexitcode", None),
    ("ddm", "ddmerrorcode", "ddmerrordiag"),
    ("jobdispatcher", "jobdispatchererrorcode", "jobdispatchererrordiag"),
    ("sup", "superrorcode", "superrordiag"),
    ("taskbuffer", "taskbuffererrorcode", "taskbuffererrordiag"),
)
_ERROR_CODE_COLS = [c for _, code, diag in ERROR_FAMILIES for c in (code, diag) if c]
_ERROR_DELTA_COLS = ["endtime", "job_id", "jeditaskid", "produsername", "computingsite", *_ERROR_CODE_COLS]


def error_explode_values(alias: str) -> str:
    """LATERAL VALUES turning one attempt/delta row into (family, code, diag) rows."""
    return ", ".join(
        f"('{family}', {alias}.{code}, {f'{alias}.{diag}' if diag else chr(39) * 2})"
        for family, code, diag in ERROR_FAMILIES
    )


# --- triggers -------------------------------------------------------------------------------------

_JOB_DELTA_INSERT = f"INSERT INTO pandamon_jobsummarydelta ({', '.join(_JOB_DELTA_COLS)}, delta)"
_ERROR_DELTA_INSERT = f"INSERT INTO pandamon_errordelta ({', '.join(_ERROR_DELTA_COLS)}, delta)"


def _attempt_select(alias: str, sign: int, source: str) -> str:
    cols = ", ".join(f"{alias}.{c}" for c in _ERROR_CODE_COLS)
    return (
        f"SELECT {alias}.endtime, {alias}.job_id, j.jeditaskid, j.produsername, {alias}.computingsite, "
        f"{cols}, {sign} FROM {source} JOIN dispatcher_job j ON j.pandaid = {alias}.job_id "
        f"WHERE {alias}.jobstatus = 'failed'"
    )


# Set-based writers that append the deltas of their own UPDATE (`job_delta_pairs_sql`) set this
# transaction-local setting around that one statement, so the row trigger skips its rows
# (`set_based_deltas` in dispatcher/services/transitions.py sets and clears it).
INLINE_DELTAS_SETTING = "ailuro.rollup_inline_deltas"
_UPDATE_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in _JOB_DELTA_COLS)
# The tuple test first: a heartbeat (no summarised column changes) stops there, at no cost.
_UPDATE_WHEN = (
    f"({_UPDATE_CHANGED}) AND current_setting('{INLINE_DELTAS_SETTING}', true) IS DISTINCT FROM 'on'"
)
_ATTEMPT_UPDATE_WHEN = " OR ".join(
    f"OLD.{c} IS DISTINCT FROM NEW.{c}"
    for c in ["jobstatus", "endtime", "job_id", "computingsite", *_ERROR_CODE_COLS]
)


def job_delta_pairs_sql(source: str) -> str:
    """INSERT … SELECT appending, for each row of the CTE `source`, exactly what the update trigger
    appends for it: −old tuple and +new tuple when the summarised tuple changed, each only with a
    state-change time. `source` carries the new columns under their own names and the old ones
    prefixed `old_`. Used by the set-based writers under
    INLINE_DELTAS_SETTING, so a 5,000-row UPDATE appends its deltas in one statement instead of
    calling the trigger function 5,000 times."""
    old = ", ".join(f"s.old_{c}" for c in _JOB_DELTA_COLS)
    new = ", ".join(f"s.{c}" for c in _JOB_DELTA_COLS)
    names = ", ".join(_JOB_DELTA_COLS)
    return (
        f"{_JOB_DELTA_INSERT} SELECT v.* FROM {source} AS s CROSS JOIN LATERAL (VALUES "
        f"({_job_tuple('s', 'old_')}, -1), ({_job_tuple('s')}, 1)) AS v({names}, delta) "
        f"WHERE ({old}) IS DISTINCT FROM ({new}) AND v.statechangetime IS NOT NULL"
    )


JOB_DELTA_COLUMNS: tuple[str, ...] = tuple(_JOB_DELTA_COLS)

CREATE_JOB_UPDATE_TRIGGER = f"""CREATE TRIGGER pandamon_job_summary_update
       AFTER UPDATE OF {", ".join(_JOB_DELTA_COLS)} ON dispatcher_job
       FOR EACH ROW WHEN ({_UPDATE_WHEN})
       EXECUTE FUNCTION pandamon_job_delta_update()"""

CREATE_TRIGGERS: tuple[str, ...] = (
    # Bulk writes (workflow submission, COPY ingest) and deletes: one statement-level trigger over
    # the transition table, one INSERT … SELECT per statement whatever its row count.
    f"""
    CREATE OR REPLACE FUNCTION pandamon_job_delta_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_JOB_DELTA_INSERT}
            SELECT {_job_tuple("n")}, 1 FROM pandamon_new_rows n WHERE n.statechangetime IS NOT NULL;
        ELSE
            {_JOB_DELTA_INSERT}
            SELECT {_job_tuple("o")}, -1 FROM pandamon_old_rows o WHERE o.statechangetime IS NOT NULL;
        END IF;
        RETURN NULL;
    END $$""",
    # Updates: row level, and only for rows whose summarised tuple changed (the WHEN clause is
    # evaluated before the function is called; a heartbeat changes none of these columns).
    f"""
    CREATE OR REPLACE FUNCTION pandamon_job_delta_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.statechangetime IS NOT NULL AND NEW.statechangetime IS NOT NULL THEN
            {_JOB_DELTA_INSERT} VALUES ({_job_tuple("OLD")}, -1), ({_job_tuple("NEW")}, 1);
        ELSIF OLD.statechangetime IS NOT NULL THEN
            {_JOB_DELTA_INSERT} VALUES ({_job_tuple("OLD")}, -1);
        ELSIF NEW.statechangetime IS NOT NULL THEN
            {_JOB_DELTA_INSERT} VALUES ({_job_tuple("NEW")}, 1);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER pandamon_job_summary_insert AFTER INSERT ON dispatcher_job
       REFERENCING NEW TABLE AS pandamon_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_job_delta_bulk()""",
    """CREATE TRIGGER pandamon_job_summary_delete AFTER DELETE ON dispatcher_job
       REFERENCING OLD TABLE AS pandamon_old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_job_delta_bulk()""",
    CREATE_JOB_UPDATE_TRIGGER,
    # Failed attempts: raw codes and diags plus the job's task and user; no regex here.
    f"""
    CREATE OR REPLACE FUNCTION pandamon_attempt_delta_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_ERROR_DELTA_INSERT} {_attempt_select("n", 1, "pandamon_new_rows n")};
        ELSE
            {_ERROR_DELTA_INSERT} {_attempt_select("o", -1, "pandamon_old_rows o")};
        END IF;
        RETURN NULL;
    END $$""",
    f"""
    CREATE OR REPLACE FUNCTION pandamon_attempt_delta_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_ERROR_DELTA_INSERT}
        {_attempt_select("a", -1, "(SELECT OLD.*) a")}
        UNION ALL
        {_attempt_select("a", 1, "(SELECT NEW.*) a")};
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER pandamon_error_summary_insert AFTER INSERT ON dispatcher_jobattempt
       REFERENCING NEW TABLE AS pandamon_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_attempt_delta_bulk()""",
    """CREATE TRIGGER pandamon_error_summary_delete AFTER DELETE ON dispatcher_jobattempt
       REFERENCING OLD TABLE AS pandamon_old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION pandamon_attempt_delta_bulk()""",
    f"""CREATE TRIGGER pandamon_error_summary_update AFTER UPDATE ON dispatcher_jobattempt
       FOR EACH ROW WHEN ({_ATTEMPT_UPDATE_WHEN})
       EXECUTE FUNCTION pandamon_attempt_delta_update()""",
)

DROP_TRIGGERS: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS pandamon_job_summary_insert ON dispatcher_job",
    "DROP TRIGGER IF EXISTS pandamon_job_summary_delete ON dispatcher_job",
    "DROP TRIGGER IF EXISTS pandamon_job_summary_update ON dispatcher_job",
    "DROP TRIGGER IF EXISTS pandamon_error_summary_insert ON dispatcher_jobattempt",
    "DROP TRIGGER IF EXISTS pandamon_error_summary_delete ON dispatcher_jobattempt",
    "DROP TRIGGER IF EXISTS pandamon_error_summary_update ON dispatcher_jobattempt",
    "DROP FUNCTION IF EXISTS pandamon_job_delta_bulk()",
    "DROP FUNCTION IF EXISTS pandamon_job_delta_update()",
    "DROP FUNCTION IF EXISTS pandamon_attempt_delta_bulk()",
    "DROP FUNCTION IF EXISTS pandamon_attempt_delta_update()",
)

# --- fold -----------------------------------------------------------------------------------------

# Each fold: one DELETE … RETURNING of the oldest `batch` deltas feeding the upsert (decision
# 0002's pattern), then the touched buckets, whose zero rows the caller deletes. %s: the batch.
FOLD_JOBS = f"""
    WITH moved AS (
        DELETE FROM pandamon_jobsummarydelta
        WHERE id IN (SELECT id FROM pandamon_jobsummarydelta ORDER BY id LIMIT %s)
        RETURNING *
    ), summed AS (
        SELECT date_trunc('hour', m.statechangetime, 'UTC') AS bucket, m.jobstatus, v.facet, v.value,
               SUM(m.delta) AS n
        FROM moved m CROSS JOIN LATERAL (VALUES {job_explode_values("m")}) AS v(facet, value)
        GROUP BY 1, 2, 3, 4
    ), upserted AS (
        INSERT INTO pandamon_jobsummary (bucket, jobstatus, facet, value, count)
        SELECT bucket, jobstatus, facet, value, n FROM summed WHERE n <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (bucket, jobstatus, facet, value)
        DO UPDATE SET count = pandamon_jobsummary.count + EXCLUDED.count
    )
    SELECT (SELECT COUNT(*) FROM moved), (SELECT array_agg(DISTINCT bucket) FROM summed)
"""

# %s: the batch, then the template expression's parameters; {explode} and {template} are
# filled with error_explode_values('m') and the template expression of `diag`.
FOLD_ERRORS = """
    WITH moved AS (
        DELETE FROM pandamon_errordelta
        WHERE id IN (SELECT id FROM pandamon_errordelta ORDER BY id LIMIT %s)
        RETURNING *
    ), fam AS (
        SELECT date_trunc('hour', m.endtime, 'UTC') AS bucket, m.jeditaskid, m.job_id, m.delta,
               v.family, v.code, v.diag
        FROM moved m CROSS JOIN LATERAL (VALUES {explode}) AS v(family, code, diag)
        WHERE v.code <> 0
    ), grouped AS (
        SELECT bucket, family, code, {template} AS template, jeditaskid, SUM(delta) AS n,
               MAX(job_id) FILTER (WHERE delta > 0) AS newest,
               MIN(job_id) FILTER (WHERE delta > 0) AS oldest,
               MIN(diag) FILTER (WHERE delta > 0) AS example
        FROM fam GROUP BY 1, 2, 3, 4, 5
    ), up_groups AS (
        INSERT INTO pandamon_errorsummary
            (bucket, family, code, template, jeditaskid, count, newest, oldest, example)
        SELECT * FROM grouped WHERE n <> 0 OR newest IS NOT NULL ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket, family, code, template, jeditaskid) DO UPDATE SET
            count = pandamon_errorsummary.count + EXCLUDED.count,
            newest = GREATEST(pandamon_errorsummary.newest, EXCLUDED.newest),
            oldest = LEAST(pandamon_errorsummary.oldest, EXCLUDED.oldest),
            example = LEAST(pandamon_errorsummary.example, EXCLUDED.example)
    ), attempts AS (
        SELECT date_trunc('hour', endtime, 'UTC') AS bucket, computingsite, jeditaskid, produsername,
               SUM(delta) AS n
        FROM moved GROUP BY 1, 2, 3, 4
    ), up_attempts AS (
        INSERT INTO pandamon_errorattemptsummary (bucket, computingsite, jeditaskid, produsername, count)
        SELECT * FROM attempts WHERE n <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (bucket, computingsite, jeditaskid, produsername)
        DO UPDATE SET count = pandamon_errorattemptsummary.count + EXCLUDED.count
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

# %s: the template expression's parameters.
BACKFILL_ERRORS = """
    INSERT INTO pandamon_errorsummary
        (bucket, family, code, template, jeditaskid, count, newest, oldest, example)
    SELECT bucket, family, code, {template}, jeditaskid, COUNT(*), MAX(job_id), MIN(job_id), MIN(diag)
    FROM (
        SELECT date_trunc('hour', a.endtime, 'UTC') AS bucket, j.jeditaskid, a.job_id,
               v.family, v.code, v.diag
        FROM dispatcher_jobattempt a JOIN dispatcher_job j ON j.pandaid = a.job_id
        CROSS JOIN LATERAL (VALUES {explode}) AS v(family, code, diag)
        WHERE a.jobstatus = 'failed' AND v.code <> 0
    ) t
    GROUP BY 1, 2, 3, 4, 5
"""
BACKFILL_ERROR_ATTEMPTS = """
    INSERT INTO pandamon_errorattemptsummary (bucket, computingsite, jeditaskid, produsername, count)
    SELECT date_trunc('hour', a.endtime, 'UTC'), a.computingsite, j.jeditaskid, j.produsername, COUNT(*)
    FROM dispatcher_jobattempt a JOIN dispatcher_job j ON j.pandaid = a.job_id
    WHERE a.jobstatus = 'failed'
    GROUP BY 1, 2, 3, 4
"""
ROLLUP_TABLES = (
    "pandamon_jobsummarydelta",
    "pandamon_jobsummary",
    "pandamon_errordelta",
    "pandamon_errorsummary",
    "pandamon_errorattemptsummary",
)
