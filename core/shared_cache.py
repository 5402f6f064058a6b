"""Django's cache as the web processes' shared state: rate-limit windows, token claims, memoised
reads. With AILURO_CACHE_URL it is Redis, shared by every process on every host; without it each
process keeps its own (the embedded run; `check --deploy` warns, ailuro.W006).

The cache only ever holds what can be recomputed or forgotten, so when Redis is down a read is a
miss and a write is dropped: requests go on (rate limits open, token claims asked again), and one
warning a minute says so instead of a 500 on every call."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache import cache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0
_last_warning = 0.0
CacheDown = (RedisError, OSError)


def cache_down(operation: str, exc: BaseException) -> None:
    """Log, at most once a minute per process, that the shared cache failed."""
    global _last_warning  # noqa: PLW0603  (a per-process throttle)
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_S:
        _last_warning = now
        log.warning(
            "shared cache unavailable (%s: %s); rate limits are open and caches miss until it is back",
            operation,
            type(exc).__name__,
            extra={"event": "cache.unavailable"},
        )


def cache_get(key: str) -> Any:
    try:
        return cache.get(key)
    except CacheDown as exc:
        cache_down("get", exc)
        return None


def cache_set(key: str, value: Any, timeout: float | None) -> None:
    try:
        cache.set(key, value, timeout)
    except CacheDown as exc:
        cache_down("set", exc)
