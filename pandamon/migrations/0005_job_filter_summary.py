from django.db import migrations, models


def filter_summary_build(apps, schema_editor):  # type: ignore[no-untyped-def]
    """PostgreSQL only: the filter summary filled from the job rows. Writers wait meanwhile (SHARE
    lock); the change feed is folded first, with the fold of this version, which also writes the
    filter summary, so the table is then emptied and built from the rows: nothing counted twice."""
    if schema_editor.connection.vendor != "postgresql":
        return
    from pandamon import rollup_sql
    from pandamon.rollups import backfill_job_filters, rollups_fold

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatcher_job IN SHARE MODE")
    while rollups_fold(batch=200_000, errors=False, days=False):  # the job changes (no error split of 0007, no day level of 0008 yet)
        pass
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {rollup_sql.FILTER_SUMMARY_TABLE}")
        backfill_job_filters(cursor)
        cursor.execute(f"ANALYZE {rollup_sql.FILTER_SUMMARY_TABLE}")


class Migration(migrations.Migration):

    dependencies = [
        ('pandamon', '0004_error_summaries_core_seconds'),
    ]

    operations = [
        migrations.CreateModel(
            name='JobFilterSummary',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('bucket', models.DateTimeField()),
                ('jobstatus', models.CharField(max_length=16)),
                ('dim', models.CharField(max_length=16)),
                ('dimvalue', models.CharField(max_length=250)),
                ('facet', models.CharField(max_length=16)),
                ('value', models.CharField(max_length=250)),
                ('count', models.BigIntegerField()),
            ],
            options={
                'indexes': [models.Index(fields=['dim', 'dimvalue', 'bucket'], name='jobfiltersummary_dim_idx')],
                'constraints': [models.UniqueConstraint(fields=('bucket', 'jobstatus', 'dim', 'dimvalue', 'facet', 'value'), name='jobfiltersummary_key')],
            },
        ),
        migrations.RunPython(filter_summary_build, migrations.RunPython.noop),
    ]
