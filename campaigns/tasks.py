"""Celery wrappers of the campaign loops: no business rules here (STYLE §5)."""

from __future__ import annotations

from celery import shared_task

from campaigns.advance import campaigns_advance_one_round


@shared_task(name="campaigns.advance", acks_late=True, soft_time_limit=240, time_limit=300)
def campaigns_advance() -> int:
    """One advancer round; beat runs it every ~30 s (DESIGN §6)."""
    return campaigns_advance_one_round()
