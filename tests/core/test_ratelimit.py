from __future__ import annotations

import bisect
import ipaddress
import logging
import math
import os
import random
import socket
import threading
import uuid
from typing import Any

import pytest
import redis.client
from django.core.cache import cache, caches
from django.test import Client, RequestFactory

from core import shared_cache
from core.auth import api_token_lookup
from core.ratelimit import (
    BATCHED_FROM,
    EXACT_FROM,
    SYNC_EVERY_S,
    LocalCounter,
    Rate,
    client_address,
    process_counter,
    rate_limit_check,
    rate_limit_hit,
    rate_parse,
    request_identity,
    window_key,
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


class Clock:
    """A process's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def on_redis(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The deployed cache (Redis, database 15); yields the Redis calls made: "execute" for a
    pipeline, "execute_command" for any command sent on its own."""
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
    return sent


def shared_window(scope: str, who: str, window: int) -> tuple[int | None, int]:
    """The shared count of `who`'s window in Redis and its time to live (s), read with two
    commands (which `on_redis` records)."""
    backend = caches["default"]
    key = backend.make_and_validate_key(window_key(scope, who, window))
    client = backend._cache.get_client(key)  # type: ignore[attr-defined]
    value = client.get(key)
    return (None if value is None else int(value)), int(client.ttl(key))


def test_on_redis_a_small_limit_counts_every_call_in_one_round_trip_and_expires(on_redis: list[str]) -> None:
    """Below BATCHED_FROM: each call one pipeline (SET NX with the window's expiry, INCRBY) and no
    other command, decided on the shared count; the window's key gone after it."""
    counter = LocalCounter()
    who, rate = uuid.uuid4().hex, Rate(3, 60)
    hits = [
        rate_limit_hit(scope="t", identity=who, rate=rate, now=600.0, counter=counter)[0] for _ in range(4)
    ]
    assert hits == [False, False, False, True]
    assert rate_limit_hit(scope="t", identity=f"{who}-b", rate=rate, now=600.0, counter=counter)[0] is False
    assert rate_limit_hit(scope="t", identity=who, rate=rate, now=660.5, counter=counter)[0] is False
    assert on_redis == ["execute"] * 6
    assert len(counter) == 0
    count, ttl = shared_window("t", who, 10)
    assert count == 4
    assert 0 < ttl <= 61


@pytest.mark.parametrize("scope", ["login", "cache_upload"])
def test_login_and_upload_limits_are_exact_across_processes(
    on_redis: list[str], settings: Any, scope: str
) -> None:
    """Password guessing gets not one attempt more than the limit, however its calls are spread
    over processes: every call is counted in Redis before it is decided."""
    rate = rate_parse(settings.AILURO_RATE_LIMITS[scope])
    assert rate.count < BATCHED_FROM
    processes = [LocalCounter(), LocalCounter()]
    who = uuid.uuid4().hex
    hits = [
        rate_limit_hit(scope=scope, identity=who, rate=rate, now=600.0, counter=processes[i % 2])[0]
        for i in range(rate.count + 5)
    ]
    assert hits == [False] * rate.count + [True] * 5
    assert on_redis == ["execute"] * (rate.count + 5)
    assert [len(process) for process in processes] == [0, 0]


def test_a_large_limit_is_counted_in_the_process_and_added_to_redis_in_batches(on_redis: list[str]) -> None:
    """The pilot's default rate: the window's first call syncs, then the calls of the next second
    are counted in the process; the first call a second later adds them all in one pipeline."""
    clock = Clock()
    counter = LocalCounter(clock=clock)
    who, rate = uuid.uuid4().hex, rate_parse("300000/minute")
    assert rate.count >= BATCHED_FROM

    hits = [
        rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0, counter=counter)[0] for _ in range(5000)
    ]
    clock.now += SYNC_EVERY_S - 0.01
    rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0, counter=counter)
    assert not any(hits)
    assert on_redis == ["execute"]
    assert shared_window("p", who, 10)[0] == 1

    clock.now += 0.01
    assert rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0, counter=counter)[0] is False
    assert on_redis.count("execute") == 2
    count, ttl = shared_window("p", who, 10)
    assert count == 5002  # the shared count is every call after a sync
    assert 0 < ttl <= 61


def test_near_the_limit_every_call_syncs_and_the_fleet_meets_429_at_the_limit(on_redis: list[str]) -> None:
    """One process, its clock standing still: calls are counted in it until its count reaches
    EXACT_FROM of the limit, then every call is one pipeline and the 1,001st call is refused."""
    counter = LocalCounter(clock=Clock())
    who, rate = uuid.uuid4().hex, Rate(1000, 60)
    hits = [
        rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0, counter=counter)[0] for _ in range(1010)
    ]
    assert hits == [False] * 1000 + [True] * 10
    exact_from = math.ceil(rate.count * EXACT_FROM)
    assert len(on_redis) == 1 + (1010 - exact_from + 1)  # the first call, then every call from the 500th
    assert shared_window("p", who, 10)[0] == 1010


def test_threads_of_one_process_count_every_call_and_refuse_exactly_at_the_limit(on_redis: list[str]) -> None:
    """Eight threads of one process: the window's first call syncs while the others wait for its
    answer, then every call is counted in the process; near a limit every call syncs and exactly
    the limit is admitted."""
    clock = Clock()
    counter = LocalCounter(clock=clock)
    big, small = uuid.uuid4().hex, uuid.uuid4().hex
    admitted = [0] * 8

    def pilots(identity: str, rate: Rate) -> None:
        def pilot(thread: int) -> None:
            for _ in range(1000):
                admitted[thread] += not rate_limit_hit(
                    scope="p", identity=identity, rate=rate, now=600.0, counter=counter
                )[0]

        threads = [threading.Thread(target=pilot, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    pilots(big, Rate(300000, 60))
    assert sum(admitted) == 8000
    assert on_redis == ["execute"]
    clock.now += SYNC_EVERY_S
    rate_limit_hit(scope="p", identity=big, rate=Rate(300000, 60), now=600.0, counter=counter)
    assert shared_window("p", big, 10)[0] == 8001

    admitted[:] = [0] * 8
    pilots(small, Rate(1000, 60))
    assert sum(admitted) == 1000
    assert shared_window("p", small, 10)[0] == 8000  # near the limit every call synced


def overshoot_bound(times: list[float], limit: int) -> int:
    """The stated bound's share of one process: the most calls it makes in an open interval of
    SYNC_EVERY_S after one of its calls, and fewer than EXACT_FROM of the limit."""
    most = max(
        (bisect.bisect_left(times, start + SYNC_EVERY_S) - i - 1 for i, start in enumerate(times)), default=0
    )
    return min(most, math.ceil(limit * EXACT_FROM) - 1)


@pytest.mark.parametrize(
    ("seed", "rates"),
    [(1, [400, 400]), (2, [150, 900, 900]), (3, [50, 2000]), (4, [700, 700, 700, 700])],
)
def test_processes_share_one_limit_within_the_stated_bound(
    on_redis: list[str], seed: int, rates: list[int]
) -> None:
    """Independent processes (their own counters and clocks, one shared Redis window) with
    random arrivals at the given calls per second: at least the limit is admitted before the
    first refusal, at most the limit plus each process's calls of one second (decision 0018)."""
    rng = random.Random(seed)
    limit = 1000
    rate = Rate(limit, 60)
    who = uuid.uuid4().hex
    arrivals: list[tuple[float, int]] = []
    for process, per_second in enumerate(rates):
        t = 0.0
        while (t := t + rng.expovariate(per_second)) < 4.0:
            arrivals.append((t, process))
    arrivals.sort()
    clocks = [Clock() for _ in rates]
    counters = [LocalCounter(clock=clock) for clock in clocks]
    admitted, first_refused = 0, None
    for t, process in arrivals:
        clocks[process].now = 1000.0 + t
        over = rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0 + t, counter=counters[process])[0]
        if over and first_refused is None:
            first_refused = admitted
        admitted += not over

    bound = sum(
        overshoot_bound([t for t, p in arrivals if p == process], limit) for process in range(len(rates))
    )
    assert first_refused is not None and first_refused >= limit
    assert limit <= admitted <= limit + bound, (admitted, bound)


def test_a_window_change_syncs_at_once_drops_the_old_window_and_a_lost_key_is_opened_again(
    on_redis: list[str],
) -> None:
    clock = Clock()
    counter = LocalCounter(clock=clock)
    who, other, rate = uuid.uuid4().hex, uuid.uuid4().hex, Rate(300000, 60)
    for _ in range(10):
        rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0, counter=counter)
    rate_limit_hit(scope="p", identity=other, rate=rate, now=601.0, counter=counter)
    assert len(counter) == 2
    assert len(on_redis) == 2

    assert rate_limit_hit(scope="p", identity=who, rate=rate, now=660.5, counter=counter) == (False, 59)
    assert len(on_redis) == 3  # the new window's first call syncs
    assert len(counter) == 1  # the ended window's keys are dropped, their pending calls with them
    assert shared_window("p", who, 10)[0] == 1
    count, ttl = shared_window("p", who, 11)
    assert count == 1
    assert 0 < ttl <= 61

    # The key expires or is evicted while the process still counts the window: the next sync
    # opens it again with the window's expiry and the calls pending since.
    backend = caches["default"]
    backend._cache.get_client().delete(backend.make_and_validate_key(window_key("p", who, 11)))  # type: ignore[attr-defined]
    for _ in range(4):
        rate_limit_hit(scope="p", identity=who, rate=rate, now=661.0, counter=counter)
    clock.now += SYNC_EVERY_S
    rate_limit_hit(scope="p", identity=who, rate=rate, now=662.0, counter=counter)
    count, ttl = shared_window("p", who, 11)
    assert count == 5
    assert 0 < ttl <= 61


def test_a_forked_process_starts_without_its_parents_counts(on_redis: list[str]) -> None:
    """gunicorn forks its workers: a worker's pending calls are its own, not its parent's."""
    rate_limit_hit(scope="p", identity=uuid.uuid4().hex, rate=Rate(300000, 60), now=600.0)
    assert len(process_counter) >= 1
    child = os.fork()
    if child == 0:
        os._exit(len(process_counter))
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0


def test_without_redis_a_large_limit_is_counted_exactly_in_the_process_cache() -> None:
    """The embedded run's in-memory cache: no round trip to save, every call counted in it."""
    counter = LocalCounter()
    who, rate = uuid.uuid4().hex, Rate(1000, 60)
    hits = [
        rate_limit_hit(scope="p", identity=who, rate=rate, now=600.0, counter=counter)[0] for _ in range(1001)
    ]
    assert hits == [False] * 1000 + [True]
    assert len(counter) == 0
    assert cache.get(window_key("p", who, 10)) == 1001


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


@pytest.mark.parametrize("rate", [Rate(1, 60), Rate(300000, 60)])
def test_a_shared_cache_that_is_down_leaves_requests_unlimited_and_logs_once(
    settings: Any, caplog: pytest.LogCaptureFixture, rate: Rate
) -> None:
    """A Redis that refuses connections: the limiter answers "not over" at once (no 500, no hang)
    and one warning names the cause, for a limit counted per call as for one counted in batches;
    the port is a closed loopback port."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    shared_cache._last_warning = 0.0
    caplog.set_level(logging.WARNING, logger="core.shared_cache")
    counter = LocalCounter()
    answers = [
        rate_limit_hit(scope="t", identity="a", rate=rate, now=600.0, counter=counter) for _ in range(3)
    ]
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
