from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from core.leases import lease_acquire, lease_release, leased

pytestmark = pytest.mark.django_db


def test_one_holder_at_a_time_until_expiry() -> None:
    now = timezone.now()
    assert lease_acquire(name="broker", holder="a", ttl_s=60, now=now)
    assert not lease_acquire(name="broker", holder="b", ttl_s=60, now=now)
    assert lease_acquire(name="broker", holder="a", ttl_s=60, now=now)  # renewal
    assert lease_acquire(name="broker", holder="b", ttl_s=60, now=now + dt.timedelta(seconds=61))
    assert not lease_acquire(name="broker", holder="a", ttl_s=60, now=now + dt.timedelta(seconds=62))


def test_release_and_context_manager() -> None:
    with leased(name="watcher", holder="a", ttl_s=60) as held:
        assert held
        with leased(name="watcher", holder="b", ttl_s=60) as other:
            assert not other
    assert lease_acquire(name="watcher", holder="b", ttl_s=60)
    lease_release(name="watcher", holder="b")
    assert lease_acquire(name="watcher", holder="c", ttl_s=60)
