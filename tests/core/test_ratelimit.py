from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import uuid
from typing import Any

import pytest
import redis.client
from django.core.cache import cache, caches
from django.test import Client, RequestFactory

from core import shared_cache
from core.auth import api_token_lookup
from core.ratelimit import (
    Rate,
    client_address,
    rate_limit_check,
    rate_limit_hit,
    rate_parse,
    request_identity,
)
from core.services import token_create
from tests.factories import UserFactory
from tests.workers import broker_redis_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


def test_rates_parse_and_bad_rates_are_refused() -> None:
    assert rate_parse("20/minute") == Rate(20, 60)
    assert rate_parse("5/s") == Rate(5, 1)
    with pytest.raises(ValueError, match="20/minute"):
        rate_parse("twenty a minute")


def test_the_limit_counts_per_identity_and_resets_with_the_window() -> None:
    rate = Rate(3, 60)
    hits = [rate_limit_hit(scope="t", identity="a", rate=rate, now=600.0)[0] for _ in range(4)]
    other = rate_limit_hit(scope="t", identity="b", rate=rate, now=600.0)[0]
    next_window = rate_limit_hit(scope="t", identity="a", rate=rate, now=660.5)[0]

    assert hits == [False, False, False, True]
    assert other is False
    assert next_window is False


def test_on_redis_a_window_is_opened_and_counted_in_one_round_trip_and_expires(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployed cache: the same counts as above, each call one pipeline (SET NX with the
    window's expiry, INCR) and no other command, the window's key gone after it."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": broker_redis_url(15),
        }
    }
    sent: list[str] = []
    for cls, name in ((redis.client.Pipeline, "execute"), (redis.client.Redis, "execute_command")):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda *a, _o=original, _n=name, **kw: sent.append(_n) or _o(*a, **kw))
    who, rate = uuid.uuid4().hex, Rate(3, 60)
    hits = [rate_limit_hit(scope="t", identity=who, rate=rate, now=600.0)[0] for _ in range(4)]
    assert hits == [False, False, False, True]
    assert rate_limit_hit(scope="t", identity=f"{who}-b", rate=rate, now=600.0)[0] is False
    assert rate_limit_hit(scope="t", identity=who, rate=rate, now=660.5)[0] is False
    assert sent == ["execute"] * 6
    backend = caches["default"]
    key = backend.make_and_validate_key(f"rl:t:{hashlib.sha256(who.encode()).hexdigest()[:32]}:10")
    client = backend._cache.get_client(key)  # type: ignore[attr-defined]
    assert client.get(key) == b"4"
    assert 0 < client.ttl(key) <= 61
    client.delete(key)


def test_identity_is_the_token_or_user_never_a_forwarded_header() -> None:
    factory = RequestFactory()
    anonymous = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4")
    user_request = factory.get("/")
    user_request.user = UserFactory()
    token = api_token_lookup(token_create(username="fleet", role="pilot"))

    assert request_identity(anonymous) == "addr:10.0.0.1"
    assert request_identity(user_request) == f"user:{user_request.user.pk}"
    assert request_identity(anonymous, token) == f"token:{token.pk}"  # type: ignore[union-attr]


def test_a_pilot_fleet_over_its_rate_gets_429_with_retry_after(settings: Any) -> None:
    settings.AILURO_RATE_LIMITS = {"pilot": "2/minute", "login": "2/minute"}
    token = api_token_lookup(token_create(username="fleet", role="pilot"))
    other = api_token_lookup(token_create(username="fleet2", role="pilot"))
    request = RequestFactory().post("/api/v1/pilot/update_job")

    results = [rate_limit_check(request, "pilot", token) for _ in range(3)]

    assert results[:2] == [None, None]
    assert results[2] is not None
    assert results[2].status_code == 429
    assert int(results[2]["Retry-After"]) >= 1
    assert rate_limit_check(request, "pilot", other) is None


def test_the_login_page_is_rate_limited_per_client_address(settings: Any) -> None:
    settings.AILURO_RATE_LIMITS = {"pilot": "2/minute", "login": "3/minute"}
    client = Client(REMOTE_ADDR="10.9.9.9")

    codes = [client.get("/login/").status_code for _ in range(4)]
    elsewhere = Client(REMOTE_ADDR="10.9.9.10").get("/login/").status_code

    assert codes == [302, 302, 302, 429]
    assert elsewhere == 302


def test_the_drf_throttle_keys_on_the_token_and_answers_429(settings: Any) -> None:
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from core.ratelimit import PilotRateThrottle

    class Ping(APIView):
        throttle_classes = [PilotRateThrottle]

        def get(self, request):  # type: ignore[no-untyped-def]
            return Response({"ok": True})

    settings.AILURO_RATE_LIMITS = {"pilot": "2/minute", "login": "2/minute"}
    first, second = token_create(username="f1", role="pilot"), token_create(username="f2", role="pilot")
    factory = APIRequestFactory()

    def call(raw: str) -> Any:
        return Ping.as_view()(factory.get("/ping", HTTP_AUTHORIZATION=f"Bearer {raw}"))

    codes = [call(first).status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    assert call(first)["Retry-After"]
    assert call(second).status_code == 200


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("10.0.0.1", "203.0.113.9", "203.0.113.9"),  # the balancer saw the client
        ("10.0.0.1", "198.51.100.7, 203.0.113.9", "203.0.113.9"),  # a spoofed left entry is skipped
        ("10.0.0.1", "203.0.113.9, 10.0.0.2", "203.0.113.9"),  # two trusted proxies in a row
        ("10.0.0.1", "", "10.0.0.1"),  # no header: the proxy itself
        ("10.0.0.1", "not-an-address", "10.0.0.1"),  # garbage no proxy of ours wrote
        ("10.0.0.1", "10.0.0.3", "10.0.0.1"),  # only trusted hops: the nearest proxy
        ("192.0.2.50", "203.0.113.9", "192.0.2.50"),  # an untrusted peer's header is ignored
        ("2001:db8::5", "203.0.113.9", "203.0.113.9"),  # IPv6 networks too
    ],
)
def test_the_client_address_is_taken_from_a_trusted_proxys_header_only(
    settings: Any, remote: str, forwarded: str, expected: str
) -> None:
    settings.AILURO_TRUSTED_PROXIES = (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
    assert request_identity(request) == f"addr:{expected}"


def test_without_trusted_proxies_the_header_is_never_read(settings: Any) -> None:
    settings.AILURO_TRUSTED_PROXIES = ()
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert client_address(request) == "10.0.0.1"


def test_a_shared_cache_that_is_down_leaves_requests_unlimited_and_logs_once(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that refuses connections: the limiter answers "not over" at once (no 500, no hang)
    and one warning names the cause; the port is a closed loopback port."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    shared_cache._last_warning = 0.0
    caplog.set_level(logging.WARNING, logger="core.shared_cache")
    rate = Rate(1, 60)
    answers = [rate_limit_hit(scope="t", identity="a", rate=rate, now=600.0) for _ in range(3)]
    assert [over for over, _ in answers] == [False, False, False]
    assert shared_cache.cache_get("k") is None
    shared_cache.cache_set("k", 1, 10)
    warnings = [r for r in caplog.records if r.name == "core.shared_cache"]
    assert len(warnings) == 1
    assert "shared cache unavailable" in warnings[0].getMessage()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
