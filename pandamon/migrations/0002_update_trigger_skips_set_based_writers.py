"""The job update trigger skips the rows of a statement that appends its own deltas (decision 0003,
"Set-based writers"): its WHEN clause also reads the transaction-local setting
`ailuro.rollup_inline_deltas`, which the set-based transitions set around exactly one such
statement. Same function, same delta table: no delta is converted or lost.

Replacing the trigger takes the table lock of DROP/CREATE TRIGGER inside the migration's
transaction, so no update runs between the two and none is left without a trigger."""

from django.db import migrations

# The trigger as migration 0001 created it (for the reverse migration).
_PREVIOUS_WHEN = " OR ".join(
    f"OLD.{c} IS DISTINCT FROM NEW.{c}"
    for c in (
        "statechangetime",
        "jobstatus",
        "computingsite",
        "produsername",
        "label",
        "jeditaskid",
        "workflow_id",
        "attemptnr",
        "resource_type",
        "prodsourcelabel",
        "piloterrorcode",
        "exeerrorcode",
        "ddmerrorcode",
        "transexitcode",
    )
)
_PREVIOUS = f"""CREATE TRIGGER pandamon_job_summary_update
       AFTER UPDATE OF statechangetime, jobstatus, computingsite, produsername, label, jeditaskid,
           workflow_id, attemptnr, resource_type, prodsourcelabel, piloterrorcode, exeerrorcode,
           ddmerrorcode, transexitcode ON dispatcher_job
       FOR EACH ROW WHEN ({_PREVIOUS_WHEN})
       EXECUTE FUNCTION pandamon_job_delta_update()"""
_DROP = "DROP TRIGGER IF EXISTS pandamon_job_summary_update ON dispatcher_job"


def guard_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    from pandamon.migrations._monitor_triggers import CREATE_JOB_UPDATE_TRIGGER

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(_DROP)
        cursor.execute(CREATE_JOB_UPDATE_TRIGGER)


def unguard_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(_DROP)
        cursor.execute(_PREVIOUS)


class Migration(migrations.Migration):
    dependencies = [
        ("pandamon", "0001_monitor_rollups"),
    ]

    operations = [
        migrations.RunPython(guard_trigger, unguard_trigger),
    ]
