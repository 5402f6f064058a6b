"""Per-identity rate limits on Django's cache (fixed windows), for the login and the pilot endpoints.

Keyed by who the caller is — the user, the `ail_` token, the OIDC robot — and only for anonymous
requests by the client's address (`client_address`): REMOTE_ADDR, or behind a proxy listed in
AILURO_TRUSTED_PROXIES the address that proxy saw; never an X-Forwarded-For anyone else wrote
(BigMon's TrafficControl mistake). The windows live in the shared cache (core/shared_cache.py), so
several web processes and hosts count together. Rates are "count/second|minute|hour" strings in settings.AILURO_RATE_LIMITS.
"""

from __future__ import annotations

import hashlib
import ipaddress
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


def rate_limit_hit(*, scope: str, identity: str, rate: Rate, now: float | None = None) -> tuple[bool, int]:
    """Count one call of `identity` in `scope`; (over the limit?, seconds until the window ends)."""
    moment = time.time() if now is None else now
    window = int(moment // rate.seconds)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    key = f"rl:{scope}:{digest}:{window}"
    retry_after = max(1, int((window + 1) * rate.seconds - moment))
    try:
        count = _window_count(key, rate.seconds + 1)
    except CacheDown as exc:  # availability first: the limit is open while the cache is away
        cache_down("rate limit", exc)
        return False, retry_after
    return count > rate.count, retry_after


def _window_count(key: str, timeout: int) -> int:
    """Count one call in the window `key` (shared by every process using the same cache)."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, RedisCache):
        return _redis_window_count(backend, key, timeout)
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


def _redis_window_count(redis_cache: RedisCache, key: str, timeout: int) -> int:
    """The window opened if new and counted in one round trip: a pipeline of SET NX (with the
    expiry) and INCR. Django's incr is two round trips (EXISTS, then INCR) and a miss two more;
    every pilot call pays this: 280 µs of the web process's CPU with Django's calls, ~130 here."""
    full = redis_cache.make_and_validate_key(key)
    client = _redis_clients.get(redis_cache)
    if client is None:  # Django builds a new client per operation: ~75 µs of CPU each time
        client = _redis_clients[redis_cache] = redis_cache._cache.get_client(full, write=True)
    pipe = client.pipeline(transaction=False)
    pipe.set(full, 0, ex=timeout, nx=True)
    pipe.incr(full)
    return int(pipe.execute()[1])


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
