"""Per-identity rate limits on Django's cache (fixed windows), for the login and the pilot endpoints.

Keyed by who the caller is — the user, the `ail_` token, the OIDC robot — and only for anonymous
requests by REMOTE_ADDR, never by a client-supplied X-Forwarded-For (BigMon's TrafficControl
mistake). Rates are "count/second|minute|hour" strings in settings.AILURO_RATE_LIMITS.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

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
    try:  # the window's first call misses; every other call is this one cache operation
        count = cache.incr(key)
    except ValueError:
        if cache.add(key, 1, timeout=rate.seconds + 1):
            count = 1
        else:  # another call opened the window in between
            try:
                count = cache.incr(key)
            except ValueError:  # and it expired already
                cache.add(key, 1, timeout=rate.seconds + 1)
                count = 1
    retry_after = max(1, int((window + 1) * rate.seconds - moment))
    return count > rate.count, retry_after


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
    return f"addr:{request.META.get('REMOTE_ADDR', '')}"


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
