"""Writes of the core app: API tokens."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from core.models import ApiToken, OidcRobot, token_hash
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


@transaction.atomic
def robot_register(
    *, name: str, client_id: str, subject: str = "", role: str = Role.PILOT, queues: list[str] | None = None
) -> OidcRobot:
    """Register (or update) the service identity of an OIDC client-credentials client.

    `subject` is the `sub` of the client's tokens: the client id at most providers (RFC 9068), the
    service account's id at Keycloak. The robot acts as its own user, `robot-<name>`.
    """
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(Role.values)}")
    if queues and role != Role.PILOT:
        raise ValueError("queues bind pilot robots; use them with role pilot")
    user, _ = get_user_model().objects.get_or_create(username=f"robot-{name}")
    if user.has_usable_password():
        user.set_unusable_password()
        user.save(update_fields=["password"])
    robot, _ = OidcRobot.objects.update_or_create(
        name=name,
        defaults={
            "client_id": client_id,
            "subject": subject or client_id,
            "user": user,
            "role": role,
            "queues": sorted(set(queues or [])),
            "active": True,
        },
    )
    return robot
