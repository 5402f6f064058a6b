from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from core.leases import lease_acquire, lease_release, leases_expired_delete
from core.models import Lease

pytestmark = pytest.mark.django_db


def test_one_holder_at_a_time_until_expiry() -> None:
    now = timezone.now()
    assert lease_acquire(name="broker", holder="a", ttl_s=60, now=now)
    assert not lease_acquire(name="broker", holder="b", ttl_s=60, now=now)
    assert lease_acquire(name="broker", holder="a", ttl_s=60, now=now)  # renewal
    assert lease_acquire(name="broker", holder="b", ttl_s=60, now=now + dt.timedelta(seconds=61))
    assert not lease_acquire(name="broker", holder="a", ttl_s=60, now=now + dt.timedelta(seconds=62))


def test_a_released_lease_is_free_for_the_next_holder() -> None:
    assert lease_acquire(name="watcher", holder="a", ttl_s=60)
    lease_release(name="watcher", holder="b")  # not b's to release
    assert not lease_acquire(name="watcher", holder="b", ttl_s=60)
    lease_release(name="watcher", holder="a")
    assert lease_acquire(name="watcher", holder="b", ttl_s=60)


def test_only_leases_expired_before_the_cutoff_are_deleted() -> None:
    now = timezone.now()
    lease_acquire(name="old", holder="dead", ttl_s=60, now=now - dt.timedelta(hours=2))
    lease_acquire(name="recent", holder="slow", ttl_s=60, now=now - dt.timedelta(minutes=10))

    assert leases_expired_delete(before=now - dt.timedelta(hours=1)) == 1
    assert list(Lease.objects.values_list("name", flat=True)) == ["recent"]
