"""OIDC robots on the pilot protocol: a registered pilot fleet acquires jobs of its own queues
only; people, unregistered robots and other fleets are refused; a provider outage is a 503; each
pilot identity is rate-limited."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from core import oidc
from core.services import robot_register, token_create
from dispatcher.models import Job
from dispatcher.protocol.auth import pilot_token_cache_clear
from tests.dispatcher.protocol.conftest import Pilot, activated_job
from tests.factories import QueueFactory, SiteFactory
from tests.interop.oidc_provider import OidcProvider

pytestmark = [pytest.mark.django_db, pytest.mark.interop]

URL = "/api/v1/pilot/acquire_jobs"


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    pilot_token_cache_clear()
    cache.clear()
    yield
    pilot_token_cache_clear()


@pytest.fixture
def fleets(oidc_server: OidcProvider) -> tuple[Any, Any]:
    mine = QueueFactory(name="SLAC_Q", site=SiteFactory(name="SLAC"), max_rss_mb=4000, max_cores=8)
    theirs = QueueFactory(name="BNL_Q", site=SiteFactory(name="BNL"), max_rss_mb=4000, max_cores=8)
    robot_register(name="slac", client_id="wms-robot", queues=["SLAC_Q"])
    robot_register(name="bnl", client_id="other-robot", queues=["BNL_Q"])
    return mine, theirs


def test_a_robot_fleet_acquires_a_job_of_its_own_queue(
    oidc_server: OidcProvider, fleets: tuple[Any, Any]
) -> None:
    mine, _ = fleets
    job = activated_job(mine)

    reply = Pilot(oidc_server.robot_token()).json(URL, {"site_name": "SLAC_Q", "node": "wn01"})

    assert reply.status_code == 200, reply.content
    assert [j["PandaID"] for j in reply.json()["data"]["jobs"]] == [job.pandaid]
    assert Job.objects.get(pk=job.pandaid).jobstatus == "sent"


def test_another_fleets_robot_cannot_take_jobs_of_this_queue(
    oidc_server: OidcProvider, fleets: tuple[Any, Any]
) -> None:
    mine, _ = fleets
    job = activated_job(mine)

    reply = Pilot(oidc_server.robot_token(client="other-robot")).json(URL, {"site_name": "SLAC_Q"})

    assert reply.status_code == 403
    assert Job.objects.get(pk=job.pandaid).jobstatus == "activated"


def test_people_and_unregistered_robots_are_not_pilots(
    oidc_server: OidcProvider, fleets: tuple[Any, Any]
) -> None:
    mine, _ = fleets
    job = activated_job(mine)
    operator = oidc_server.device_tokens("alice")["access_token"]
    pilot_person = oidc_server.device_tokens("pilot")["access_token"]  # in atlas/pilot, but a person

    replies = [Pilot(t).json(URL, {"site_name": "SLAC_Q"}) for t in (operator, pilot_person)]

    assert [r.status_code for r in replies] == [401, 401]
    assert Job.objects.get(pk=job.pandaid).jobstatus == "activated"


def test_a_provider_outage_is_a_503_for_pilots_with_an_unchecked_token(
    oidc_server: OidcProvider, fleets: tuple[Any, Any]
) -> None:
    token = oidc_server.robot_token()
    oidc_server.stop()
    oidc.caches_clear()
    try:
        down = Pilot(token).json(URL, {"site_name": "SLAC_Q"})
    finally:
        oidc_server.start()
    back = Pilot(token).json(URL, {"site_name": "SLAC_Q"})

    assert down.status_code == 503
    assert "identity provider unavailable" in down.json()["message"]
    assert back.status_code == 200


def test_a_pilot_identity_over_its_rate_gets_429_while_others_continue(
    settings: Any, oidc_server: OidcProvider, fleets: tuple[Any, Any]
) -> None:
    settings.AILURO_RATE_LIMITS = {**settings.AILURO_RATE_LIMITS, "pilot": "3/minute"}
    robot = Pilot(oidc_server.robot_token())
    other = Pilot(token_create(username="slac-token", role="pilot", queues=["SLAC_Q"]))

    codes = [robot.json(URL, {"site_name": "SLAC_Q"}).status_code for _ in range(4)]

    assert codes == [200, 200, 200, 429]
    assert other.json(URL, {"site_name": "SLAC_Q"}).status_code == 200
