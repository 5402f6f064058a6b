"""Writes of the core app: API tokens."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from core.models import ApiToken, token_hash
from core.roles import Role

TOKEN_PREFIX = "ail_"  # noqa: S105  (a marker that tells our tokens from JWTs, not a secret)


@transaction.atomic
def token_create(
    *, username: str, role: str = Role.USER, queues: list[str] | None = None, name: str = ""
) -> str:
    """Create a bearer token and return it in clear; only its hash is kept."""
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(Role.values)}")
    user, _ = get_user_model().objects.get_or_create(username=username)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(
        user=user,
        name=name,
        role=role,
        queues=sorted(set(queues or [])),
        key_prefix=raw[:12],
        key_hash=token_hash(raw),
    )
    return raw


def token_revoke(*, token_id: int) -> bool:
    return bool(
        ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )
