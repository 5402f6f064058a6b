"""Campaign notifications: a JSON POST to the campaign's webhook on failure, stall and completion.

Sent after the advancer's transaction commits (no network I/O inside a transaction, docs/contributing.md#shape-of-the-code); a
receiver that is down is logged and skipped, never retried in a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import requests
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)


def webhook_send(*, url: str, payload: Mapping[str, Any]) -> bool:
    try:
        response = requests.post(
            url, json=dict(payload), timeout=int(str(settings.CAMPAIGNS["WEBHOOK_TIMEOUT_S"]))
        )
    except requests.RequestException as exc:
        log.warning("campaign webhook %s failed: %s", url, exc, extra={"event": "campaign.webhook_failed"})
        return False
    if response.status_code >= 400:
        log.warning(
            "campaign webhook %s answered %s",
            url,
            response.status_code,
            extra={"event": "campaign.webhook_failed"},
        )
        return False
    return True


def notify(spec: Mapping[str, Any], event: str, payload: Mapping[str, Any]) -> None:
    """Queue a notification for after the commit, if the spec asks for this event."""
    config = spec.get("notifications") or {}
    url = config.get("webhook")
    if not url or event not in config.get("events", ()):
        return
    body = {"event": event, **payload}
    transaction.on_commit(lambda: webhook_send(url=url, payload=body))
