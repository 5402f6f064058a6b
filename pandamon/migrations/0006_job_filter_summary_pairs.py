from django.db import migrations


def filter_summary_pairs_build(apps, schema_editor):  # type: ignore[no-untyped-def]
    """PostgreSQL only: the filter summary's pairs (decision 0016) filled from the job rows. Writers
    wait meanwhile (SHARE lock); the change feed is folded first, with the fold of this version,
    which also writes the pairs, so their rows are then deleted and built from the job rows:
    nothing counted twice."""
    if schema_editor.connection.vendor != "postgresql":
        return
    from pandamon import rollup_sql
    from pandamon.rollups import backfill_job_filters, rollups_fold

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatcher_job IN SHARE MODE")
    while rollups_fold(batch=200_000, errors=False, days=False):  # the job changes (no error split of 0007, no day level of 0008 yet)
        pass
    pairs = list(rollup_sql.FILTER_PAIRS)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {rollup_sql.FILTER_SUMMARY_TABLE} WHERE dim = ANY(%s)", [pairs])  # noqa: S608  (a constant name)
        backfill_job_filters(cursor, pairs)
        cursor.execute(f"ANALYZE {rollup_sql.FILTER_SUMMARY_TABLE}")


def filter_summary_pairs_drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Back to single dimensions: the pairs' rows go (the older fold does not write them)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DELETE FROM pandamon_jobfiltersummary WHERE dim LIKE %s", ["%+%"])


class Migration(migrations.Migration):
    dependencies = [
        ("pandamon", "0005_job_filter_summary"),
    ]

    operations = [
        migrations.RunPython(filter_summary_pairs_build, filter_summary_pairs_drop),
    ]
