from __future__ import annotations

from django.apps import AppConfig


class PandaCompatConfig(AppConfig):
    name = "pandacompat"
    verbose_name = "PanDA client compatibility: iDDS relay, file cache"
