from __future__ import annotations

from django.apps import AppConfig


class PandamonConfig(AppConfig):
    name = "pandamon"
    verbose_name = "Monitor"

    def ready(self) -> None:
        # The monitor fold joins the loops `manage.py run_loops` (and so the embedded run) drives; the
        # dispatcher keeps the registry and never imports the monitor itself.
        from dispatcher.loops import LOOPS
        from pandamon.rollups import monitor_one_batch

        LOOPS.setdefault("monitor", monitor_one_batch)
