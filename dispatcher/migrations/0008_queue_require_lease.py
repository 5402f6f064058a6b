from django.db import migrations, models


def panda_queues_without_lease(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Queues served by the real PanDA pilot, which does not echo the lease, keep fencing on the
    attempt number alone; every other queue requires the lease."""
    Queue = apps.get_model("dispatcher", "Queue")
    Queue.objects.filter(pilot_flavour="panda").update(require_lease=False)


class Migration(migrations.Migration):
    dependencies = [
        ("dispatcher", "0007_retry_walltime_and_network_rules"),
    ]

    operations = [
        migrations.AddField(
            model_name="queue",
            name="require_lease",
            field=models.BooleanField(
                default=True,
                help_text=(
                    "Pilot updates must echo the lease of their dispatch; off only for queues served by the "
                    "real PanDA pilot, which does not echo it (then the attempt number alone fences)."
                ),
            ),
        ),
        migrations.RunPython(panda_queues_without_lease, migrations.RunPython.noop),
    ]
