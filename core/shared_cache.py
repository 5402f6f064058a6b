"""Django's cache as the web processes' shared state: rate-limit windows, token claims, memoised
reads. With AILURO_CACHE_URL it is Redis, shared by every process on every host; without it each
process keeps its own (the embedded run; `check --deploy` warns, ailuro.W006).

The cache only ever holds what can be recomputed or forgotten, so when Redis is down a read is a
miss and a write is dropped: requests go on (rate limits open, token claims asked again), and one
warning a minute says so instead of a 500 on every call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import cache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_WARN_EVERY_S = 60.0
_WAIT_POLL_S = 0.05
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


def cached_or_computed_once(
    key: str, compute: Callable[[], _T], timeout: float, *, wait_s: float = 15.0
) -> _T:
    """The cached value of `key`, or `compute()` stored under it for `timeout` seconds. While one
    request computes a missing value the others asking for it wait for that value instead of all
    running the same read at once: a memoised read that takes seconds under load would otherwise
    be recomputed by every reader arriving meanwhile, each holding a database backend. A waiter
    computes the value itself when the one computing it fails or `wait_s` passes; with the cache
    down every request computes. `compute` must not return None (None is a miss)."""
    value = cache_get(key)
    if value is not None:
        return value  # type: ignore[no-any-return]
    claim = f"{key}:computing"
    deadline = time.monotonic() + wait_s
    claimed = False
    while True:
        try:
            claimed = bool(cache.add(claim, 1, wait_s))
        except CacheDown as exc:
            cache_down("add", exc)
            break
        if claimed or time.monotonic() >= deadline:
            break
        time.sleep(_WAIT_POLL_S)
        value = cache_get(key)
        if value is not None:
            return value  # type: ignore[no-any-return]
    try:
        # The one computing it may have finished between this request's last look and its claim.
        value = cache_get(key) if claimed else None
        if value is None:
            value = compute()
            cache_set(key, value, timeout)
        return value  # type: ignore[no-any-return]
    finally:
        if claimed:
            try:
                cache.delete(claim)
            except CacheDown as exc:
                cache_down("delete", exc)
