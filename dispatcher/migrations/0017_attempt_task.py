"""Each attempt carries its job's task (`jeditaskid`), indexed, so that a task's core-hours and
failure budget read the task's attempts directly instead of hashing every attempt against the job
table (`dispatcher.queries.tasks_core_use`). Existing attempts, live and archived, are filled from
their jobs: one UPDATE per table (at 10M jobs with ~1M attempts, under a minute)."""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

FIELD = models.ForeignKey(
    blank=True,
    db_column="jeditaskid",
    db_constraint=False,
    null=True,
    on_delete=django.db.models.deletion.DO_NOTHING,
    related_name="+",
    to="dispatcher.task",
)


def backfill(apps: Any, schema_editor: Any) -> None:
    pairs = (
        ("dispatcher_jobattempt", "dispatcher_job"),
        ("dispatcher_archivedjobattempt", "dispatcher_archivedjob"),
    )
    with schema_editor.connection.cursor() as cursor:
        for attempts, jobs in pairs:
            if schema_editor.connection.vendor == "postgresql":
                cursor.execute(
                    f"UPDATE {attempts} a SET jeditaskid = j.jeditaskid FROM {jobs} j"  # noqa: S608
                    " WHERE j.pandaid = a.job_id AND a.jeditaskid IS NULL"
                )
            else:
                cursor.execute(
                    f"UPDATE {attempts} SET jeditaskid = (SELECT j.jeditaskid FROM {jobs} j"  # noqa: S608
                    f" WHERE j.pandaid = {attempts}.job_id) WHERE jeditaskid IS NULL"
                )


class Migration(migrations.Migration):
    dependencies = [
        ("dispatcher", "0016_job_ended_stats_index"),
    ]

    operations = [
        migrations.AddField(model_name="archivedjobattempt", name="task", field=FIELD),
        migrations.AddField(model_name="jobattempt", name="task", field=FIELD),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
