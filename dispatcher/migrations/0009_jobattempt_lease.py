from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dispatcher", "0008_queue_require_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="jobattempt",
            name="lease",
            field=models.CharField(
                blank=True,
                help_text="A failed attempt's dispatch lease: a late finished report must echo it.",
                max_length=32,
            ),
        ),
    ]
