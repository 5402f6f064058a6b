"""The attack corpus (tests/attack_corpus.py) against every URL pattern of the project: no answer is a
500, whatever the input and whoever sends it, and a refused request writes no row.

Each endpoint gets the credential that passes its authentication (a pilot token for the pilot
protocol, a user token for the REST API and the PanDA relay, an administrator's session for the
admin and the monitor), so the hostile input reaches the code behind the gate; anonymous callers
get the gate itself. PostgreSQL matters here: NUL characters and out-of-range integers are 500s
there that SQLite would let through.
"""

from __future__ import annotations

import logging
import time
import traceback
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.signals import got_request_exception
from django.db import connection
from django.test import Client

from core.services import token_create
from dispatcher.services import NewJob, workflow_submit
from tests.attack_corpus import (
    HOSTILE_HEADERS,
    Endpoint,
    endpoints,
    fill,
    hostile_bodies,
    hostile_queries,
    iter_paths,
    row_counts,
)
from tests.factories import QueueFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Failure:
    who: str
    method: str
    path: str
    what: str
    status: int
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.who} {self.method} {self.path[:120]} [{self.what}] -> {self.status}: {self.detail[-600:]}"
        )


@pytest.fixture
def exceptions() -> Iterator[list[str]]:
    """The tracebacks of the exceptions that became 500s."""
    seen: list[str] = []

    def record(sender: Any, request: Any = None, **kwargs: Any) -> None:
        seen.append(traceback.format_exc())

    got_request_exception.connect(record)
    yield seen
    got_request_exception.disconnect(record)


@dataclass
class World:
    valid: dict[str, str]
    clients: dict[str, Client]
    admin: Any  # the administrator the session belongs to


@pytest.fixture
def world(settings: Any) -> World:
    settings.AILURO = {**settings.AILURO, "ANONYMOUS_READ": True}
    if connection.vendor != "postgresql":
        pytest.skip("the corpus runs against PostgreSQL, where NUL bytes and range errors are 500 sources")
    queue = QueueFactory(name="ATTACK_Q", max_rss_mb=8000)
    owner = UserFactory(username="alice")
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    workflow = workflow_submit(
        owner=owner, name="attacked", jobs=[NewJob(name=f"j{i}", label="l", command="true") for i in range(3)]
    )
    job = workflow.jobs.order_by("pandaid").first()  # type: ignore[attr-defined]
    from campaigns.services.campaign_actions import campaign_create
    from tests.campaigns.conftest import spec_text

    campaign = campaign_create(owner=admin, spec_yaml=spec_text())
    valid = {
        "workflow_id": str(workflow.pk),
        "pandaid": str(job.pk),
        "jeditaskid": str(job.task_id or 1),
        "campaign_id": str(campaign.pk),
        "step_id": "1",
        "group_id": "1",
        "verb": "cancel",
        "queue": queue.name,
        "vo": "ailuro",
        "object_id": "1",
        "app_label": "dispatcher",
    }
    user = Client(
        raise_request_exception=False,
        HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='user')}",
    )
    pilot = Client(
        raise_request_exception=False,
        HTTP_AUTHORIZATION=f"Bearer {token_create(username='pilots', role='pilot')}",
    )
    session = Client(raise_request_exception=False)
    anonymous = Client(raise_request_exception=False)
    return World(valid, {"anonymous": anonymous, "user": user, "pilot": pilot, "admin": session}, admin)


def credential(endpoint: Endpoint) -> str:
    route = endpoint.route
    if endpoint.admin:
        return "admin"
    if route.startswith(("api/v1/pilot/", "server/panda/")) and "relay" not in route:
        return "pilot"
    if route.startswith(("api/", "cache/", "trf/", "auth/")) or "relay" in route:
        return "user"
    return "admin"  # the monitor's pages and actions, login and logout


def valid_for(endpoint: Endpoint, world: World) -> dict[str, str]:
    values = dict(world.valid)
    route = endpoint.route
    values["name"] = (
        "ATTACK_Q"
        if "queue" in route
        else "alice"
        if "user" in route
        else "x.tgz"
        if "cache" in route
        else "SITE"
    )
    return values


class Attacker:
    def __init__(self, world: World, exceptions: list[str]) -> None:
        self.world = world
        self.exceptions = exceptions
        self.failures: list[Failure] = []
        self.sent = 0
        self.counts = row_counts()

    def send(self, who: str, method: str, path: str, what: str, **kwargs: Any) -> None:
        client = self.world.clients[who]
        self.exceptions.clear()
        response = client.generic(method, path, **kwargs)
        self.sent += 1
        if response.status_code >= 500 and response.status_code != 503:
            detail = (
                self.exceptions[-1] if self.exceptions else response.content[:600].decode(errors="replace")
            )
            self.failures.append(Failure(who, method, path, what, response.status_code, detail))
        elif response.status_code == 400 and not response.content.strip():
            self.failures.append(Failure(who, method, path, what, 400, "a 400 that does not say why"))
        if method in WRITES:
            counts = row_counts()
            if response.status_code >= 400 and counts != self.counts:
                changed = {t: (self.counts.get(t), n) for t, n in counts.items() if self.counts.get(t) != n}
                self.failures.append(
                    Failure(
                        who, method, path, what, response.status_code, f"refused but wrote rows: {changed}"
                    )
                )
            self.counts = counts

    def attack(self, endpoint: Endpoint) -> None:
        # A fresh session each time: the corpus posts to logout/ too.
        self.world.clients["admin"].force_login(self.world.admin)
        self.counts = row_counts()
        who = credential(endpoint)
        valid = valid_for(endpoint, self.world)
        path = fill(endpoint, valid)
        # The gate: anonymous and with hostile credentials and headers.
        self.send("anonymous", "GET", path, "anonymous")
        self.send("anonymous", "POST", path, "anonymous post", data=b"{}", content_type="application/json")
        for headers in [] if endpoint.admin else HOSTILE_HEADERS:  # the gate is the same middleware
            self.send("anonymous", "GET", path, f"headers {sorted(headers)}", **headers)
        # Behind the gate: hostile path values, query strings and bodies.
        for label, hostile_path in iter_paths(endpoint, valid):
            self.send(who, "GET", hostile_path, f"path {label}")
        for query in hostile_queries():
            self.send(who, "GET", f"{path}?{query}", f"query {query[:40]}")
        for body in hostile_bodies():
            self.send(
                who,
                "POST",
                path,
                f"body {body.label}",
                data=body.data,
                content_type=body.content_type,
                **body.extra,
            )
        for method in ("PUT", "PATCH", "DELETE"):
            self.send(who, method, path, f"{method} malformed", data=b"{", content_type="application/json")


@pytest.fixture
def quiet() -> Iterator[None]:
    """Thousands of refused requests: Django's one warning each is not what this test reads."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("group", ["pilot", "user", "monitor", "admin-0", "admin-1"])
def test_the_attack_corpus_meets_no_500_and_no_partial_write(
    group: str, world: World, exceptions: list[str], quiet: None
) -> None:
    attacker = Attacker(world, exceptions)
    everything = endpoints()
    assert len(everything) > 100
    chosen = [e for e in everything if group_of(e) == group]
    assert chosen
    started = time.monotonic()
    for endpoint in chosen:
        attacker.attack(endpoint)
    failures = "\n".join(str(f) for f in attacker.failures[:40])
    assert not attacker.failures, (
        f"{len(attacker.failures)} failure(s) of {attacker.sent} requests:\n{failures}"
    )
    print(f"{group}: {len(chosen)} endpoints, {attacker.sent} requests in {time.monotonic() - started:.0f} s")


def group_of(endpoint: Endpoint) -> str:
    """Which test sends the corpus to `endpoint` (one per gate, each within the test timeout)."""
    who = credential(endpoint)
    if who == "admin":
        # The admin's 167 patterns in two halves, each well within the timeout on a busy machine.
        return f"admin-{zlib.crc32(endpoint.route.encode()) % 2}" if endpoint.admin else "monitor"
    return who
