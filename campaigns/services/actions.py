"""What every campaign verb shares: the refusal, the outcome, and `action_run`, which runs a
verb's body in one transaction and leaves its ActionLog row (refusals included, previews not)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from campaigns.models import (
    ActionLog,
    ActionResult,
    Campaign,
    Group,
    Step,
)

log = logging.getLogger(__name__)


class ActionRefused(ValueError):
    """A verb's precondition failed; the message says which."""


@dataclass
class ActionOutcome:
    verb: str
    object_type: str
    object_id: int
    preview: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "preview": self.preview,
            "message": self.message,
            **self.details,
        }


def _campaign_of(object_type: str, object_id: int) -> int:
    if object_type == "campaign":
        return Campaign.objects.values_list("pk", flat=True).get(pk=object_id)
    if object_type == "step":
        return Step.objects.values_list("campaign_id", flat=True).get(pk=object_id)
    return Group.objects.values_list("campaign_id", flat=True).get(pk=object_id)


def action_run(
    verb: str,
    object_type: str,
    object_id: int,
    actor: str,
    params: Mapping[str, Any],
    preview: bool,
    body: Callable[[], ActionOutcome],
) -> ActionOutcome:
    """Run a verb's body in one transaction and audit it. A refusal is logged in its own transaction
    (the body's was rolled back) and re-raised; a preview is never logged."""
    campaign_id = _campaign_of(object_type, object_id)
    try:
        with transaction.atomic():
            outcome = body()
            if not preview:
                ActionLog.objects.create(
                    campaign_id=campaign_id,
                    actor=actor,
                    verb=verb,
                    object_type=object_type,
                    object_id=object_id,
                    params=dict(params),
                    result=ActionResult.OK,
                    message=outcome.message[:500],
                )
    except ActionRefused as exc:
        if not preview:
            ActionLog.objects.create(
                campaign_id=campaign_id,
                actor=actor,
                verb=verb,
                object_type=object_type,
                object_id=object_id,
                params=dict(params),
                result=ActionResult.REFUSED,
                message=str(exc)[:500],
            )
        raise
    log.info(
        "%s %s %s:%s%s",
        actor,
        verb,
        object_type,
        object_id,
        " (preview)" if preview else "",
        extra={"event": f"campaign.{verb}", "campaign_id": campaign_id, "preview": preview},
    )
    return outcome
