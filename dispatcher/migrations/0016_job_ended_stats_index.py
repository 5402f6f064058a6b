"""/site/<name>/'s per-queue statistics and worker nodes read index-only (pandamon.queries.sites,
`site_job_stats`; docs/decisions/0015).

The live table (PostgreSQL): four generated columns that hold a job's node, walltime, CPU time per
core and peak RSS once it is finished or failed and NULL before, and a partial index on
(computingsite, statechangetime) of the ended jobs that includes them. Heartbeats change the node
and the metrics of running jobs; those columns must stay out of every index so that a heartbeat is
a HOT update (dispatcher.models.Job), and their generated copies stay NULL until the job ends. The
columns are not in the model: only this read uses them. Adding them rewrites the job table once.

The archive (its rows never change): the same index on its own columns, in the model.
"""

from django.db import migrations, models

_ENDED = "jobstatus IN ('finished', 'failed')"

_FORWARD = [
    f"""ALTER TABLE dispatcher_job
        ADD COLUMN ended_node varchar(128) GENERATED ALWAYS AS (CASE WHEN {_ENDED} THEN modificationhost END) STORED,
        ADD COLUMN ended_walltime interval GENERATED ALWAYS AS (CASE WHEN {_ENDED} THEN endtime - starttime END) STORED,
        ADD COLUMN ended_cpu_per_core double precision
            GENERATED ALWAYS AS (CASE WHEN {_ENDED} THEN cpu_time_s / request_cores END) STORED,
        ADD COLUMN ended_max_rss_kb bigint GENERATED ALWAYS AS (CASE WHEN {_ENDED} THEN max_rss_kb END) STORED""",
    f"""CREATE INDEX job_ended_stats_idx ON dispatcher_job (computingsite, statechangetime)
        INCLUDE (jobstatus, ended_node, ended_walltime, ended_cpu_per_core, ended_max_rss_kb)
        WHERE {_ENDED}""",
]
_BACKWARD = [
    "DROP INDEX IF EXISTS job_ended_stats_idx",
    """ALTER TABLE dispatcher_job DROP COLUMN IF EXISTS ended_node, DROP COLUMN IF EXISTS ended_walltime,
        DROP COLUMN IF EXISTS ended_cpu_per_core, DROP COLUMN IF EXISTS ended_max_rss_kb""",
]


def _run(statements: list[str]):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor != "postgresql":
            return  # SQLite (the embedded run) groups the job table's own columns
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("dispatcher", "0015_job_task_time_index"),
    ]

    operations = [
        migrations.RunPython(_run(_FORWARD), _run(_BACKWARD)),
        migrations.AddIndex(
            model_name="archivedjob",
            index=models.Index(
                condition=models.Q(("jobstatus__in", ["finished", "failed"])),
                fields=["queue", "statechangetime"],
                include=(
                    "jobstatus",
                    "node",
                    "starttime",
                    "endtime",
                    "cpu_time_s",
                    "request_cores",
                    "max_rss_kb",
                ),
                name="jobarchive_ended_stats_idx",
            ),
        ),
    ]
