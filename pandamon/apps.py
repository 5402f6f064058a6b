from __future__ import annotations

from django.apps import AppConfig


class PandamonConfig(AppConfig):
    name = "pandamon"
    verbose_name = "Monitor"
