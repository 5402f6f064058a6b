"""Retry rules may raise the walltime; seed dispatcher.retry.RULES_SEEDED_0007 and widen the
connection patterns of the default database rules that still hold the patterns of 0002."""

from django.db import migrations, models

_WIDENED = ("database-connection-exe", "database-connection-taskbuffer")


def seed(apps, schema_editor):
    from dispatcher.retry import DB_ERRORS_0002, RULES_SEEDED_0002, RULES_SEEDED_0007

    RetryRule = apps.get_model("dispatcher", "RetryRule")
    for rule in RULES_SEEDED_0007:
        fields = dict(rule)
        RetryRule.objects.get_or_create(name=fields.pop("name"), defaults=fields)
    for rule in RULES_SEEDED_0002:
        if rule["name"] in _WIDENED:
            RetryRule.objects.filter(name=rule["name"], diag_regex=DB_ERRORS_0002).update(
                diag_regex=rule["diag_regex"], description=rule["description"]
            )


def unseed(apps, schema_editor):
    from dispatcher.retry import DB_ERRORS_0002, RULES_SEEDED_0002, RULES_SEEDED_0007

    RetryRule = apps.get_model("dispatcher", "RetryRule")
    RetryRule.objects.filter(name__in=[rule["name"] for rule in RULES_SEEDED_0007]).delete()
    RetryRule.objects.filter(action="increase_walltime").update(action="retry")
    for rule in RULES_SEEDED_0002:
        if rule["name"] in _WIDENED:
            RetryRule.objects.filter(name=rule["name"], diag_regex=rule["diag_regex"]).update(
                diag_regex=DB_ERRORS_0002
            )


class Migration(migrations.Migration):
    dependencies = [("dispatcher", "0006_change_feed")]

    operations = [
        migrations.RemoveConstraint(model_name="retryrule", name="retryrule_action_valid"),
        migrations.AlterField(
            model_name="retryrule",
            name="action",
            field=models.CharField(
                choices=[
                    ("retry", "retry (transient)"),
                    ("increase_memory", "retry with more memory"),
                    ("increase_walltime", "retry with more walltime"),
                    ("no_retry", "no retry (deterministic)"),
                ],
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="retryrule",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("action__in", ["retry", "increase_memory", "increase_walltime", "no_retry"])
                ),
                name="retryrule_action_valid",
            ),
        ),
        migrations.RunPython(seed, unseed),
    ]
