from __future__ import annotations

from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        # The advancer joins the loops `manage.py run_loops` (and so the embedded run) drives; the
        # dispatcher keeps the registry and never imports campaigns itself.
        from campaigns.advance import campaigns_advance_one_round
        from dispatcher.loops import LOOPS

        LOOPS.setdefault("campaigns", campaigns_advance_one_round)
