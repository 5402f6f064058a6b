from __future__ import annotations

from django.apps import AppConfig


class HarvesterConfig(AppConfig):
    name = "harvester"
    verbose_name = "Harvester: pilot workers"
