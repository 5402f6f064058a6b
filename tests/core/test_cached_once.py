"""A memoised read asked for by many requests at once is computed once: the others wait for its
value; when the computation fails or takes too long, a waiter computes it itself."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.core.cache import cache

from core.shared_cache import cached_or_computed_once


def _ask_from_threads(n: int, key: str, compute: Any, **kwargs: Any) -> list[Any]:
    results: list[Any] = []

    def ask() -> None:
        try:
            results.append(cached_or_computed_once(key, compute, 60, **kwargs))
        except RuntimeError as exc:
            results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_requests_arriving_while_a_value_is_computed_wait_for_it_instead_of_computing_it_again() -> None:
    key = f"test:{uuid.uuid4()}"
    calls: list[int] = []

    def compute() -> list[int]:
        calls.append(1)
        time.sleep(0.3)
        return [1, 2]

    assert _ask_from_threads(6, key, compute) == [[1, 2]] * 6
    assert len(calls) == 1
    assert cached_or_computed_once(key, compute, 60) == [1, 2] and len(calls) == 1
    assert cache.get(f"{key}:computing") is None


def test_when_the_computation_fails_a_waiting_request_computes_the_value_itself() -> None:
    key = f"test:{uuid.uuid4()}"
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        time.sleep(0.2)
        if len(calls) == 1:
            raise RuntimeError("statement timeout")
        return "edges"

    results = _ask_from_threads(3, key, compute)
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert results.count("edges") == 2
    assert len(calls) == 2


def test_a_request_that_waited_its_limit_computes_and_leaves_the_other_claim_alone() -> None:
    key = f"test:{uuid.uuid4()}"
    cache.add(f"{key}:computing", 1, 30)  # another process computing, slowly
    started = time.monotonic()
    assert cached_or_computed_once(key, lambda: 7, 60, wait_s=0.3) == 7
    assert time.monotonic() - started >= 0.3
    assert cache.get(f"{key}:computing") == 1
    assert cache.get(key) == 7


@pytest.mark.parametrize("value", [[], 0, ""])
def test_an_empty_value_is_cached_like_any_other(value: Any) -> None:
    key = f"test:{uuid.uuid4()}"
    calls: list[int] = []

    def compute() -> Any:
        calls.append(1)
        return value

    assert cached_or_computed_once(key, compute, 60) == value
    assert cached_or_computed_once(key, compute, 60) == value
    assert len(calls) == 1
