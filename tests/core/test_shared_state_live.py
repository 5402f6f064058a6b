"""Two web instances (gunicorn, each with two workers) sharing one Redis through AILURO_CACHE_URL
count one client's calls together, and both read the client's address from the trusted proxy's
X-Forwarded-For: a client cannot double its rate by landing on the other instance or worker."""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ailuro.server import AiluroServer
from tests.workers import broker_redis_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOGIN_RATE = 4  # per hour: the window cannot turn over during the test


def cache_url() -> str:
    """The broker's Redis, database 15 (the suite's brokers use low numbers)."""
    return broker_redis_url(15)


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[list[AiluroServer]]:
    env = {
        "AILURO_CACHE_URL": cache_url(),
        "AILURO_RATE_LOGIN": f"{LOGIN_RATE}/hour",
        "AILURO_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    servers = [AiluroServer(tmp_path / name, env, workers=2, threads=2) for name in ("a", "b")]
    for server in servers:
        (server.tmp).mkdir()
        server.start()
    yield servers
    for server in servers:
        server.stop()


def login_status(server: AiluroServer, client: str) -> int:
    request = urllib.request.Request(server.url + "/login/", headers={"X-Forwarded-For": client})
    opener = urllib.request.build_opener(NoRedirect())
    try:
        with opener.open(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def logs(servers: list[AiluroServer]) -> str:
    return "\n".join(server.log_tail() for server in servers)


def test_two_instances_share_one_clients_rate_limit(instances: list[AiluroServer]) -> None:
    # A fresh documentation address per run: earlier runs' windows in the shared cache don't count.
    client = f"198.51.100.{random.randrange(1, 255)}, 203.0.113.{random.randrange(1, 255)}"
    statuses = [login_status(instances[i % 2], client) for i in range(LOGIN_RATE + 2)]
    assert statuses[:LOGIN_RATE] == [302] * LOGIN_RATE, (statuses, logs(instances))
    assert statuses[LOGIN_RATE:] == [429, 429], (statuses, logs(instances))
    # Another client behind the same balancer is counted on its own.
    other = f"203.0.113.{random.randrange(1, 255)}"
    while other == client.rsplit(", ", 1)[1]:
        other = f"203.0.113.{random.randrange(1, 255)}"
    assert login_status(instances[1], other) == 302


def test_an_instance_whose_cache_is_down_still_serves(tmp_path: Path) -> None:
    """Redis unreachable (a closed port): the login page answers at once; limits are open."""
    server = AiluroServer(
        tmp_path,
        {"AILURO_CACHE_URL": "redis://127.0.0.1:1/0", "AILURO_RATE_LOGIN": "1/hour"},
    )
    server.start()
    try:
        started = time.monotonic()
        statuses = [login_status(server, "203.0.113.1") for _ in range(3)]
        assert statuses == [302, 302, 302]
        assert time.monotonic() - started < 10
    finally:
        server.stop()
    assert "shared cache unavailable" in (tmp_path / "server.log").read_text()
