"""Celery interface of the provisioner: a thin task around `provision_one_round` (docs/architecture.md#loops).

The beat entry (every ~30 s) belongs in config/celery.py with the other loops.
"""

from __future__ import annotations

import logging
import os
import socket

from celery import shared_task
from django.conf import settings

from core.leases import leased
from harvester.provisioning import ProvisionerConfig, provision_one_round

log = logging.getLogger(__name__)


@shared_task(name="harvester.provision", acks_late=True, soft_time_limit=100, time_limit=120)
def provision() -> int:
    """One provisioning round under the `harvester.provision` lease (a second beat is harmless)."""
    conf = settings.AILURO_HARVESTER
    if not conf["SERVER_URL"]:
        log.warning("harvester.provision: AILURO_HARVESTER_SERVER_URL is not set; no pilots submitted")
        return 0
    holder = f"{socket.gethostname()}:{os.getpid()}"
    with leased(name="harvester.provision", holder=holder, ttl_s=110) as held:
        if not held:
            return 0
        return provision_one_round(
            config=ProvisionerConfig(
                url=str(conf["SERVER_URL"]).rstrip("/"),
                lost_after_s=float(conf["LOST_AFTER_S"]),
                pilot_heartbeat_s=float(conf["PILOT_HEARTBEAT_S"]),
            )
        )
