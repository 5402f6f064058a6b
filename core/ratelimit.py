"""Per-identity rate limits on Django's cache (fixed windows), for the login and the pilot endpoints.

Keyed by who the caller is — the user, the `ail_` token, the OIDC robot — and only for anonymous
requests by the client's address (`client_address`): REMOTE_ADDR, or behind a proxy listed in
AILURO_TRUSTED_PROXIES the address that proxy saw; never an X-Forwarded-For anyone else wrote
(BigMon's TrafficControl mistake). The windows live in the shared cache (core/shared_cache.py), so
several web processes and hosts count together. Rates are "count/second|minute|hour" strings in settings.AILURO_RATE_LIMITS.

On Redis a scope whose rate allows at least `BATCHED_FROM` calls a window (the pilot calls) is
counted in each process first (`LocalCounter`) and added to the shared window in batches: at a
process's first call of a window, then at most once every `SYNC_EVERY_S`, and at every call once
the count it knows reaches `EXACT_FROM` of the limit. The limit may then be passed by what the
processes admit between two syncs (docs/decisions/0018-rate-limit-counted-in-batches.md states the
bound). Smaller rates (login, uploads) count every call in the shared window before deciding.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from core.shared_cache import CacheDown, cache_down

_UNITS = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "h": 3600}

# A rate allowing at least this many calls a window is counted in batches on Redis. Below it (the
# login's 20/minute against password guessing, the uploads' 30/minute) every call is counted in
# the shared window before it is decided, so no process or host can let one call more through.
BATCHED_FROM = 1000
# A process adds its pending calls of a window to the shared count at least this often while calls
# come (the first call of a window always syncs).
SYNC_EVERY_S = 1.0
# Once the count a process knows (the shared count it last learned plus its pending calls) reaches
# this fraction of the limit, every call of that window syncs, and is decided as without batches.
EXACT_FROM = 0.5


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


@lru_cache(maxsize=64)
def rate_parse(text: str) -> Rate:
    count, _, unit = text.partition("/")
    if not count.strip().isdigit() or unit.strip() not in _UNITS:
        raise ValueError(f"rate must look like '20/minute', got {text!r}")
    return Rate(int(count), _UNITS[unit.strip()])


def window_key(scope: str, identity: str, window: int) -> str:
    """The cache key of `identity`'s `window` (its number since the epoch) in `scope`; the
    identity hashed, so no address or token name is stored."""
    return f"rl:{scope}:{hashlib.sha256(identity.encode()).hexdigest()[:32]}:{window}"


def rate_limit_hit(
    *, scope: str, identity: str, rate: Rate, now: float | None = None, counter: LocalCounter | None = None
) -> tuple[bool, int]:
    """Count one call of `identity` in `scope`; (over the limit?, seconds until the window ends).
    `counter` holds the process's batched counts (the process's own one unless given)."""
    moment = time.time() if now is None else now
    window = int(moment // rate.seconds)
    key = window_key(scope, identity, window)
    window_end = (window + 1) * rate.seconds
    retry_after = max(1, int(window_end - moment))
    try:
        backend = caches[DEFAULT_CACHE_ALIAS]
        if not isinstance(backend, RedisCache):
            count = _local_cache_window_count(key, rate.seconds + 1)
        elif rate.count >= BATCHED_FROM:
            count = (process_counter if counter is None else counter).count(
                key,
                limit=rate.count,
                window_end=window_end,
                moment=moment,
                add=lambda calls: _redis_window_add(backend, key, rate.seconds + 1, calls),
            )
        else:
            count = _redis_window_add(backend, key, rate.seconds + 1, 1)
    except CacheDown as exc:  # availability first: the limit is open while the cache is away
        cache_down("rate limit", exc)
        return False, retry_after
    return count > rate.count, retry_after


def _local_cache_window_count(key: str, timeout: int) -> int:
    """Count one call in the window `key` of a cache that is not Redis: the process's own memory
    (the embedded run), where a call costs no round trip and is counted exactly."""
    try:  # the window's first call misses; every other call is this one cache operation
        return int(cache.incr(key))
    except ValueError:
        if cache.add(key, 1, timeout=timeout):
            return 1
        try:  # another call opened the window in between
            return int(cache.incr(key))
        except ValueError:  # and it expired already
            cache.add(key, 1, timeout=timeout)
            return 1


# One Redis client per cache backend (a backend is per thread; a client is safe across threads
# and holds the backend's connection pool).
_redis_clients: weakref.WeakKeyDictionary[RedisCache, Any] = weakref.WeakKeyDictionary()


def _redis_window_add(redis_cache: RedisCache, key: str, timeout: int, calls: int) -> int:
    """Add `calls` to the shared window `key`, opened if new, in one round trip: a pipeline of
    SET NX (with the expiry) and INCRBY; the window's count after it. Django's incr is two round
    trips (EXISTS, then INCR) and a miss two more: 280 µs of the web process's CPU a call with
    Django's calls, ~130 here, a few µs for a call counted in the process (`LocalCounter`)."""
    full = redis_cache.make_and_validate_key(key)
    client = _redis_clients.get(redis_cache)
    if client is None:  # Django builds a new client per operation: ~75 µs of CPU each time
        client = _redis_clients[redis_cache] = redis_cache._cache.get_client(full, write=True)
    pipe = client.pipeline(transaction=False)
    pipe.set(full, 0, ex=timeout, nx=True)
    pipe.incrby(full, calls)
    return int(pipe.execute()[1])


@dataclass
class _Window:
    """One window key as a process sees it."""

    shared: int = 0  # the shared count the process last learned
    pending: int = 0  # calls counted here and not yet added to the shared count
    synced_at: float = -math.inf  # when the last sync was started (the counter's clock)
    syncing: int = 0  # syncs started and not answered yet


class LocalCounter:
    """A process's counts of the batched windows, added to the shared windows in batches.

    A call is decided here, without a round trip, while the process's estimate of the window (the
    shared count it last learned plus its pending calls) stays below `EXACT_FROM` of the limit and
    its last sync of the window started less than `SYNC_EVERY_S` ago. Any other call syncs: it adds
    the pending calls (its own included) to the shared window and is decided on the count that
    comes back, as every call is without batches. A call that would be decided here while a sync
    of its window waits for its answer waits for that answer (one round trip, once a second) and
    is then decided on it: the window's first calls learn the shared count before any is admitted
    here. Thread-safe; the round trips are made outside the lock. Holds the windows that have not
    ended: the first call of a new window end drops those that have (their pending calls are
    never added; their windows are over)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.forget()

    def forget(self) -> None:
        """Drop every count (a forked process starts with none: its parent's are not its own)."""
        self._lock = threading.Condition(threading.Lock())
        self._windows: dict[float, dict[str, _Window]] = {}  # by the window's end, then by key

    def __len__(self) -> int:
        """How many windows the counter holds."""
        with self._lock:
            return sum(len(keys) for keys in self._windows.values())

    def count(
        self, key: str, *, limit: int, window_end: float, moment: float, add: Callable[[int], int]
    ) -> int:
        """Count one call in the window `key` ending at `window_end` (epoch seconds; `moment` is
        now on the same clock); the count to decide on. `add(n)` adds n calls to the shared
        window and returns its count."""
        exact_from = limit * EXACT_FROM
        with self._lock:
            keys = self._windows.get(window_end)
            if keys is None:
                for ended in [end for end in self._windows if end <= moment]:
                    del self._windows[ended]
                keys = self._windows[window_end] = {}
            state = keys.get(key)
            if state is None:
                state = keys[key] = _Window()
            state.pending += 1
            while True:
                now = self._clock()
                estimate = state.shared + state.pending
                if now - state.synced_at >= SYNC_EVERY_S or estimate >= exact_from:
                    break
                if not state.syncing:
                    return estimate
                self._lock.wait(SYNC_EVERY_S)
            calls, state.pending = state.pending, 0
            state.synced_at, state.syncing = now, state.syncing + 1
        try:
            shared = add(calls)
        except BaseException:  # its calls are lost, as every call is while the cache is down
            with self._lock:
                state.syncing -= 1
                self._lock.notify_all()
            raise
        with self._lock:
            state.syncing -= 1
            state.shared = max(state.shared, shared)  # answers of concurrent syncs may cross
            self._lock.notify_all()
        return shared


process_counter = LocalCounter()
os.register_at_fork(after_in_child=process_counter.forget)


def request_identity(request: HttpRequest | Request, auth: Any = None) -> str:
    """Who is calling, for rate limiting: robot, token, user, else the peer address."""
    subject = getattr(auth, "subject", None)
    if subject:
        return f"oidc:{subject}"
    token_pk = getattr(auth, "pk", None)
    if token_pk is not None:
        return f"token:{token_pk}"
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return f"addr:{client_address(request)}"


def client_address(request: HttpRequest | Request) -> str:
    """REMOTE_ADDR; when that is a trusted proxy, the X-Forwarded-For entry the nearest untrusted
    hop is known by (read right to left, skipping trusted proxies, as each proxy appends)."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies = settings.AILURO_TRUSTED_PROXIES
    if not proxies or not _trusted(remote, proxies):
        return remote
    hops = [hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return remote  # a hop no proxy of ours wrote: not to be believed
        if not any(address in network for network in proxies):
            return hop
    return remote


def _trusted(address: str, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in proxies)


def too_many(scope: str, retry_after: int) -> JsonResponse:
    response = JsonResponse({"detail": f"rate limit of {scope} calls exceeded; retry later"}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def rate_limited(scope: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorator for plain views (login). Pilot views, which authenticate first, call
    `rate_limit_check(request, scope, auth)` after authentication instead."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            limited = rate_limit_check(request, scope)
            return limited if limited is not None else view(request, *args, **kwargs)

        return wrapper

    return decorate


def rate_limit_check(request: HttpRequest, scope: str, auth: Any = None) -> HttpResponse | None:
    """A 429 response when `scope`'s rate is exceeded for this caller, else None."""
    over, retry_after = rate_limit_hit(
        scope=scope,
        identity=request_identity(request, auth),
        rate=rate_parse(settings.AILURO_RATE_LIMITS[scope]),
    )
    return too_many(scope, retry_after) if over else None


class IdentityRateThrottle(BaseThrottle):
    """DRF throttle keyed by the authenticated identity; subclasses set `scope` (e.g. PilotRateThrottle)."""

    scope = "pilot"

    def __init__(self) -> None:
        self.retry_after = 1

    def allow_request(self, request: Request, view: APIView) -> bool:
        over, self.retry_after = rate_limit_hit(
            scope=self.scope,
            identity=request_identity(request, request.auth),
            rate=rate_parse(settings.AILURO_RATE_LIMITS[self.scope]),
        )
        return not over

    def wait(self) -> float | None:
        return float(self.retry_after)


class PilotRateThrottle(IdentityRateThrottle):
    scope = "pilot"
