"""Seed the default retry rules (dispatcher.retry.RULES_SEEDED_0002); operators edit them in admin."""

from django.db import migrations


def seed(apps, schema_editor):
    from dispatcher.retry import RULES_SEEDED_0002 as DEFAULT_RULES

    RetryRule = apps.get_model("dispatcher", "RetryRule")
    for rule in DEFAULT_RULES:
        fields = dict(rule)
        RetryRule.objects.get_or_create(name=fields.pop("name"), defaults=fields)


def unseed(apps, schema_editor):
    from dispatcher.retry import RULES_SEEDED_0002 as DEFAULT_RULES

    RetryRule = apps.get_model("dispatcher", "RetryRule")
    RetryRule.objects.filter(name__in=[rule["name"] for rule in DEFAULT_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("dispatcher", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
