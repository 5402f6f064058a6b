"""The monitor stops recording changes itself and reads the engine's change feed (decision 0006):
its delta rows not folded yet move to `dispatcher_jobchange` / `dispatcher_failedattemptchange`,
then its triggers on the dispatcher's tables, their functions and its delta tables go.

PostgreSQL, in the migration's one transaction, with writers of jobs and attempts locked out:

1. Empty the change tables. Between dispatcher migration 0006 and this one both sets of triggers
   ran, so every change row there has its twin in the monitor's delta tables, or was already folded
   from them; and when the monitor is installed after the engine, its backfill (migration 0001)
   counted every job. The change feed is not folded before this migration (the monitor loop of
   this version starts after `migrate`).
2. Copy the monitor's unfolded deltas, oldest first, into the change tables.
3. Drop the monitor's triggers and functions, then its delta tables.

Reversed: the monitor's tables and triggers come back and the change rows move back into them.
SQLite (the embedded run) had no triggers and empty tables: only the tables are dropped."""

from django.db import migrations

_LOCK = "LOCK TABLE dispatcher_job, dispatcher_jobattempt IN SHARE ROW EXCLUSIVE MODE"


def _moves():  # type: ignore[no-untyped-def]
    from dispatcher.changefeed import FAILED_ATTEMPT_CHANGE_COLUMNS, JOB_CHANGE_COLUMNS
    from pandamon.migrations._monitor_triggers import ERROR_DELTA_COLUMNS, JOB_DELTA_COLUMNS

    assert set(JOB_DELTA_COLUMNS) == set(JOB_CHANGE_COLUMNS)
    assert set(ERROR_DELTA_COLUMNS) == set(FAILED_ATTEMPT_CHANGE_COLUMNS)
    return (
        ("pandamon_jobsummarydelta", "dispatcher_jobchange", ", ".join(JOB_DELTA_COLUMNS)),
        ("pandamon_errordelta", "dispatcher_failedattemptchange", ", ".join(ERROR_DELTA_COLUMNS)),
    )


def hand_over(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    from pandamon.migrations._monitor_triggers import DROP_TRIGGERS

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(_LOCK)
        for old, new, columns in _moves():
            cursor.execute(f"DELETE FROM {new}")
            cursor.execute(
                f"INSERT INTO {new} ({columns}, delta) SELECT {columns}, delta FROM {old} ORDER BY id"
            )
        for statement in DROP_TRIGGERS:
            cursor.execute(statement)


def hand_back(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    from pandamon.migrations._monitor_triggers import CREATE_TRIGGERS

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(_LOCK)
        for statement in CREATE_TRIGGERS:
            cursor.execute(statement)
        for old, new, columns in _moves():
            cursor.execute(
                f"INSERT INTO {old} ({columns}, delta) SELECT {columns}, delta FROM {new} ORDER BY id"
            )
            cursor.execute(f"DELETE FROM {new}")


class Migration(migrations.Migration):

    dependencies = [
        ("pandamon", "0002_update_trigger_skips_set_based_writers"),
        ("dispatcher", "0006_change_feed"),
    ]

    operations = [
        migrations.RunPython(hand_over, hand_back),
        migrations.DeleteModel(
            name="ErrorDelta",
        ),
        migrations.DeleteModel(
            name="JobSummaryDelta",
        ),
    ]
