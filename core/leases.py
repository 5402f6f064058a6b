"""Database leases: at most one holder per name, expiring so a dead holder cannot block forever.

Used by every loop (DESIGN §6): Celery delivers at least once and a second beat duplicates every
schedule entry, so the loop body runs only where `lease_acquire` returned True.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.models import Lease


def lease_acquire(*, name: str, holder: str, ttl_s: float, now: dt.datetime | None = None) -> bool:
    """Take or renew the lease. Steps:

    1. conditional UPDATE: succeeds when the lease expired or is already ours;
    2. otherwise INSERT: succeeds when nobody ever held it; a unique violation means someone else
       holds it now.
    """
    now = now or timezone.now()
    expires = now + dt.timedelta(seconds=ttl_s)
    updated = Lease.objects.filter(Q(name=name) & (Q(expires_at__lt=now) | Q(holder=holder))).update(
        holder=holder, acquired_at=now, expires_at=expires
    )
    if updated:
        return True
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, holder=holder, acquired_at=now, expires_at=expires)
    except IntegrityError:
        return False
    return True


def lease_release(*, name: str, holder: str) -> None:
    Lease.objects.filter(name=name, holder=holder).delete()


@contextmanager
def leased(*, name: str, holder: str, ttl_s: float) -> Iterator[bool]:
    """`with leased(...) as held:` — runs the body either way; `held` says whether we own it."""
    held = lease_acquire(name=name, holder=holder, ttl_s=ttl_s)
    try:
        yield held
    finally:
        if held:
            lease_release(name=name, holder=holder)
