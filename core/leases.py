"""Database leases: at most one holder per name, expiring so a dead holder cannot block forever.

Used by every loop (`core.loops.loop_run`; docs/architecture.md#loops): Celery delivers at least
once and a second beat duplicates every schedule entry, so a loop's steps run only where
`lease_acquire` returned True.
"""

from __future__ import annotations

import datetime as dt

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


def leases_expired_delete(*, before: dt.datetime) -> int:
    """Delete leases that expired before `before` (a crashed holder's rows); returns how many."""
    return Lease.objects.filter(expires_at__lt=before).delete()[0]
