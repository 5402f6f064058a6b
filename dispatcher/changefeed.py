"""The change feed: the engine's record of what changed in its job and attempt tables
(`dispatcher.models.JobChange`, `FailedAttemptChange`; decision 0006). PostgreSQL only; on SQLite
(the embedded run) nothing is appended and readers scan the tables instead.

Who appends:

* triggers on `dispatcher_job` and `dispatcher_jobattempt` (`CREATE_TRIGGERS`, created by
  dispatcher migration 0006), so every write path is covered: COPY ingest, workflow submission,
  single transitions, admin edits, raw repairs;
* the set-based transitions (`jobs_transition_bulk`), which append the pairs of their own UPDATE in
  the same statement (`job_change_pairs_sql`) under `set_based_changes`, so the row trigger skips
  exactly those rows.

An archive move (`archive_move`, dispatcher migration 0012) deletes rows without a change: the
delete triggers append nothing in its transaction.

What is appended: for a job, its tuple of summarised columns (`JOB_CHANGE_COLUMNS`: the state-change
time and the facet columns of `JOB_FACET_COLUMNS`), −old and +new, when the tuple changes and only
with a state-change time; for an attempt, the failed ones with their raw error codes and diags and
their job's task and user. The SQL is built once from these constant column lists; no value is ever
interpolated.
"""

# ruff: noqa: S608  (SQL built from the constant column lists of this module; no values)
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from dispatcher.models import Job
from dispatcher.retry import FAMILY_COLUMNS

# The job facets the monitor counts (PanDA's names) → column of dispatcher_job. The one list:
# the change rows carry these columns, and the monitor's facets and summaries derive from it.
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


_ATTNAME_BY_COLUMN = {f.column: f.attname for f in Job._meta.concrete_fields}
# The same facets → field of `dispatcher.models.Job` (`queue_id`, `task_id`, …), for ORM queries.
JOB_FACET_FIELDS: dict[str, str] = {name: _ATTNAME_BY_COLUMN[c] for name, c in JOB_FACET_COLUMNS.items()}

# A job change row's columns in order: the time, then every facet column.
JOB_CHANGE_COLUMNS: tuple[str, ...] = ("statechangetime", *JOB_FACET_COLUMNS.values())
# A failed attempt's error columns (code, then diag when the family has one).
ERROR_COLUMNS: tuple[str, ...] = tuple(c for code, diag in FAMILY_COLUMNS.values() for c in (code, diag) if c)
FAILED_ATTEMPT_CHANGE_COLUMNS: tuple[str, ...] = (
    "endtime",
    "job_id",
    "jeditaskid",
    "produsername",
    "computingsite",
    *ERROR_COLUMNS,
)
TABLES: tuple[str, ...] = ("dispatcher_jobchange", "dispatcher_failedattemptchange")

# Set around ONE statement that appends the changes of its own job UPDATE (`set_based_changes`):
# the update trigger's WHEN clause reads it and skips that statement's rows.
INLINE_CHANGES_SETTING = "ailuro.inline_job_changes"
# Set for the transaction of an archive move (`archive_move`): the rows the move deletes from the
# job and attempt tables leave the live tables, not the counts, so the delete triggers append
# nothing (dispatcher/services/archive.py; the monitor's counts stay exactly what they were).
ARCHIVING_SETTING = "ailuro.archiving"
# Unset is NULL (never set in the session) or '' (set in an earlier transaction): not archiving.
_ARCHIVING = f"COALESCE(current_setting('{ARCHIVING_SETTING}', true), '') = 'on'"


def _job_tuple(alias: str, prefix: str = "") -> str:
    """The change row of the job row `alias` (columns named `prefix` + column): its time and raw
    facet columns (NULL queue → '')."""
    return ", ".join(
        f"COALESCE({alias}.{prefix}{c}, '')" if c == "computingsite" else f"{alias}.{prefix}{c}"
        for c in JOB_CHANGE_COLUMNS
    )


_JOB_INSERT = f"INSERT INTO dispatcher_jobchange ({', '.join(JOB_CHANGE_COLUMNS)}, delta)"
# A failed attempt's cost in core-seconds: whole seconds of walltime × requested cores (integers,
# so /errors/ totals add up exactly; an attempt that never started costs 0).
ATTEMPT_CORE_S_SQL = "(COALESCE(ROUND({alias}.walltime_s::numeric), 0)::bigint * {alias}.request_cores)"
_ATTEMPT_INSERT = f"INSERT INTO dispatcher_failedattemptchange ({', '.join(FAILED_ATTEMPT_CHANGE_COLUMNS)}"


def job_change_pairs_sql(source: str) -> str:
    """INSERT … SELECT appending, for each row of the CTE `source`, exactly what the update trigger
    appends for it: −old tuple and +new tuple when the tuple changed, each only with a state-change
    time. `source` carries the new columns under their own names and the old ones prefixed `old_`.
    Run under `set_based_changes`, so a 5,000-row UPDATE appends its changes in one statement
    instead of calling the trigger function 5,000 times."""
    old = ", ".join(f"s.old_{c}" for c in JOB_CHANGE_COLUMNS)
    new = ", ".join(f"s.{c}" for c in JOB_CHANGE_COLUMNS)
    names = ", ".join(JOB_CHANGE_COLUMNS)
    return (
        f"{_JOB_INSERT} SELECT v.* FROM {source} AS s CROSS JOIN LATERAL (VALUES "
        f"({_job_tuple('s', 'old_')}, -1), ({_job_tuple('s')}, 1)) AS v({names}, delta) "
        f"WHERE ({old}) IS DISTINCT FROM ({new}) AND v.statechangetime IS NOT NULL"
    )


@contextmanager
def archive_move() -> Iterator[None]:
    """Around the statements of an archive move: the delete triggers of the job and attempt tables
    append nothing (a transaction-local setting, cleared right after, so a move inside a larger
    transaction mutes nothing else; a failed move's rollback takes the setting with it). No-op on
    SQLite."""
    if not connection.in_atomic_block:
        raise RuntimeError("archive_move needs a transaction")
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', true)", [ARCHIVING_SETTING])
        yield
        cursor.execute("SELECT set_config(%s, 'off', true)", [ARCHIVING_SETTING])


@contextmanager
def set_based_changes() -> Iterator[None]:
    """Around ONE statement that appends the changes of its own job UPDATE (`job_change_pairs_sql`):
    the row trigger skips that statement's rows (its WHEN clause reads this transaction-local
    setting), so no row is recorded twice or missed.

    Must run inside a transaction (the setting is SET LOCAL). It is cleared right after the
    statement; if the statement fails, the transaction or savepoint that catches the error rolls the
    setting back with it, as there is no savepoint between the two.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("set_based_changes needs a transaction")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', true)", [INLINE_CHANGES_SETTING])
        yield
        cursor.execute("SELECT set_config(%s, 'off', true)", [INLINE_CHANGES_SETTING])


# --- triggers -------------------------------------------------------------------------------------


def _attempt_insert(core_seconds: bool) -> str:
    return f"{_ATTEMPT_INSERT}{', core_s' if core_seconds else ''}, delta)"


def _attempt_select(alias: str, sign: int, source: str, core_seconds: bool) -> str:
    cols = ", ".join(f"{alias}.{c}" for c in ERROR_COLUMNS)
    core = f"{ATTEMPT_CORE_S_SQL.format(alias=alias)}, " if core_seconds else ""
    return (
        f"SELECT {alias}.endtime, {alias}.job_id, j.jeditaskid, j.produsername, {alias}.computingsite, "
        f"{cols}, {core}{sign} "
        f"FROM {source} JOIN dispatcher_job j ON j.pandaid = {alias}.job_id "
        f"WHERE {alias}.jobstatus = 'failed'"
    )


_UPDATE_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in JOB_CHANGE_COLUMNS)
# The tuple test first: a heartbeat (no summarised column changes) stops there, at no cost.
_UPDATE_WHEN = (
    f"({_UPDATE_CHANGED}) AND current_setting('{INLINE_CHANGES_SETTING}', true) IS DISTINCT FROM 'on'"
)
_ATTEMPT_UPDATE_WHEN = " OR ".join(
    f"OLD.{c} IS DISTINCT FROM NEW.{c}"
    for c in [
        "jobstatus",
        "endtime",
        "job_id",
        "computingsite",
        "walltime_s",
        "request_cores",
        *ERROR_COLUMNS,
    ]
)
_ATTEMPT_UPDATE_WHEN_0006 = " OR ".join(
    f"OLD.{c} IS DISTINCT FROM NEW.{c}"
    for c in ["jobstatus", "endtime", "job_id", "computingsite", *ERROR_COLUMNS]
)


def triggers_sql(*, core_seconds: bool = True) -> tuple[str, ...]:
    """The statements creating the change-feed triggers; `core_seconds` False: as dispatcher
    migration 0006 made them, before `dispatcher_failedattemptchange.core_s` (migration 0010)."""
    return (*_JOB_TRIGGERS, *_attempt_triggers(core_seconds))


_JOB_TRIGGERS: tuple[str, ...] = (
    # Bulk writes (workflow submission, COPY ingest) and deletes: one statement-level trigger over
    # the transition table, one INSERT … SELECT per statement whatever its row count.
    f"""
    CREATE OR REPLACE FUNCTION dispatcher_job_change_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_JOB_INSERT}
            SELECT {_job_tuple("n")}, 1 FROM dispatcher_new_rows n WHERE n.statechangetime IS NOT NULL;
        ELSIF NOT {_ARCHIVING} THEN
            {_JOB_INSERT}
            SELECT {_job_tuple("o")}, -1 FROM dispatcher_old_rows o WHERE o.statechangetime IS NOT NULL;
        END IF;
        RETURN NULL;
    END $$""",
    # Updates: row level, and only for rows whose tuple changed (the WHEN clause is evaluated before
    # the function is called; a heartbeat changes none of these columns).
    f"""
    CREATE OR REPLACE FUNCTION dispatcher_job_change_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.statechangetime IS NOT NULL AND NEW.statechangetime IS NOT NULL THEN
            {_JOB_INSERT} VALUES ({_job_tuple("OLD")}, -1), ({_job_tuple("NEW")}, 1);
        ELSIF OLD.statechangetime IS NOT NULL THEN
            {_JOB_INSERT} VALUES ({_job_tuple("OLD")}, -1);
        ELSIF NEW.statechangetime IS NOT NULL THEN
            {_JOB_INSERT} VALUES ({_job_tuple("NEW")}, 1);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER dispatcher_job_change_insert AFTER INSERT ON dispatcher_job
       REFERENCING NEW TABLE AS dispatcher_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION dispatcher_job_change_bulk()""",
    """CREATE TRIGGER dispatcher_job_change_delete AFTER DELETE ON dispatcher_job
       REFERENCING OLD TABLE AS dispatcher_old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION dispatcher_job_change_bulk()""",
    f"""CREATE TRIGGER dispatcher_job_change_update
       AFTER UPDATE OF {", ".join(JOB_CHANGE_COLUMNS)} ON dispatcher_job
       FOR EACH ROW WHEN ({_UPDATE_WHEN})
       EXECUTE FUNCTION dispatcher_job_change_update()""",
)


def _attempt_triggers(core_seconds: bool) -> tuple[str, ...]:
    insert = _attempt_insert(core_seconds)
    when = _ATTEMPT_UPDATE_WHEN if core_seconds else _ATTEMPT_UPDATE_WHEN_0006
    # Failed attempts: raw codes and diags plus the job's task and user (one primary-key read).
    return (
        f"""
    CREATE OR REPLACE FUNCTION dispatcher_attempt_change_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {insert} {_attempt_select("n", 1, "dispatcher_new_rows n", core_seconds)};
        ELSIF NOT {_ARCHIVING} THEN
            {insert} {_attempt_select("o", -1, "dispatcher_old_rows o", core_seconds)};
        END IF;
        RETURN NULL;
    END $$""",
        f"""
    CREATE OR REPLACE FUNCTION dispatcher_attempt_change_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {insert}
        {_attempt_select("a", -1, "(SELECT OLD.*) a", core_seconds)}
        UNION ALL
        {_attempt_select("a", 1, "(SELECT NEW.*) a", core_seconds)};
        RETURN NULL;
    END $$""",
        """CREATE TRIGGER dispatcher_attempt_change_insert AFTER INSERT ON dispatcher_jobattempt
       REFERENCING NEW TABLE AS dispatcher_new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION dispatcher_attempt_change_bulk()""",
        """CREATE TRIGGER dispatcher_attempt_change_delete AFTER DELETE ON dispatcher_jobattempt
       REFERENCING OLD TABLE AS dispatcher_old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION dispatcher_attempt_change_bulk()""",
        f"""CREATE TRIGGER dispatcher_attempt_change_update AFTER UPDATE ON dispatcher_jobattempt
       FOR EACH ROW WHEN ({when})
       EXECUTE FUNCTION dispatcher_attempt_change_update()""",
    )


CREATE_TRIGGERS: tuple[str, ...] = triggers_sql()

DROP_TRIGGERS: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS dispatcher_job_change_insert ON dispatcher_job",
    "DROP TRIGGER IF EXISTS dispatcher_job_change_delete ON dispatcher_job",
    "DROP TRIGGER IF EXISTS dispatcher_job_change_update ON dispatcher_job",
    "DROP TRIGGER IF EXISTS dispatcher_attempt_change_insert ON dispatcher_jobattempt",
    "DROP TRIGGER IF EXISTS dispatcher_attempt_change_delete ON dispatcher_jobattempt",
    "DROP TRIGGER IF EXISTS dispatcher_attempt_change_update ON dispatcher_jobattempt",
    "DROP FUNCTION IF EXISTS dispatcher_job_change_bulk()",
    "DROP FUNCTION IF EXISTS dispatcher_job_change_update()",
    "DROP FUNCTION IF EXISTS dispatcher_attempt_change_bulk()",
    "DROP FUNCTION IF EXISTS dispatcher_attempt_change_update()",
)
