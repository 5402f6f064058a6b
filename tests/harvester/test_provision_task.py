"""The provisioner loop's Celery task (config/loops.py): needs the server URL, runs under the
loop's lease."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import pytest

from config.celery import LOOP_TASKS
from core.leases import lease_acquire
from harvester.models import Worker
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db

provision = LOOP_TASKS["provisioner"]


@pytest.fixture
def harvester_settings(settings: Any, tmp_path: Any) -> Any:
    settings.DATA_DIR = tmp_path
    settings.AILURO_HARVESTER = {
        "SERVER_URL": "http://127.0.0.1:9/",
        "LOST_AFTER_S": 120,
        "PILOT_HEARTBEAT_S": 60,
    }
    yield settings
    for worker in Worker.objects.exclude(batch_id=""):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(worker.batch_id.split(":")[0]), signal.SIGKILL)


def test_the_task_submits_pilots_for_waiting_jobs(harvester_settings: Any) -> None:
    queue = QueueFactory(plugin="local", max_queued_workers=1)
    JobFactory(jobstatus="activated", queue=queue)
    assert provision.apply().get() == 1
    assert Worker.objects.filter(queue=queue).count() == 1


def test_the_task_does_nothing_without_a_server_url(harvester_settings: Any) -> None:
    harvester_settings.AILURO_HARVESTER = {**harvester_settings.AILURO_HARVESTER, "SERVER_URL": ""}
    JobFactory(jobstatus="activated", queue=QueueFactory(plugin="local"))
    assert provision.apply().get() == 0
    assert not Worker.objects.exists()


def test_the_task_yields_when_another_provisioner_holds_the_lease(harvester_settings: Any) -> None:
    JobFactory(jobstatus="activated", queue=QueueFactory(plugin="local"))
    assert lease_acquire(name="loop:provisioner", holder="other-host:1", ttl_s=60)
    assert provision.apply().get() is None
    assert not Worker.objects.exists()
