"""A task's job list by time (`job_task_time_idx`): on PostgreSQL only. Its order, newest state
change first with NULLs last, is the list's ORDER BY, and SQLite cannot put NULLS LAST in an index
(the embedded run's task lists are small enough to sort)."""

from typing import Any

from django.db import migrations, models

INDEX = models.Index(
    models.F("task"),
    models.OrderBy(models.F("statechangetime"), descending=True, nulls_last=True),
    models.OrderBy(models.F("pandaid"), descending=True),
    name="job_task_time_idx",
)


def _on_postgresql(action: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            getattr(schema_editor, action)(apps.get_model("dispatcher", "Job"), INDEX)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("dispatcher", "0014_archived_job_cluster"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="job", index=INDEX)],
            database_operations=[
                migrations.RunPython(_on_postgresql("add_index"), _on_postgresql("remove_index"))
            ],
        ),
    ]
