"""Cross-cutting tables: API tokens and loop leases. No domain models live here."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models

from core.roles import Role


def token_hash(raw: str) -> str:
    """Tokens are stored as SHA-256 digests: a database dump does not hand out credentials."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for an API client or a pilot fleet (`manage.py create_token`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    # Pilot tokens are bound to these queues; empty means not bound (any queue the role allows).
    queues = models.JSONField(default=list, blank=True)
    key_prefix = models.CharField(max_length=12, help_text="First characters of the token, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="apitoken_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user}, {self.role})"


class Lease(models.Model):
    """A named, expiring lock so a loop runs in one place at a time (DESIGN §6)."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%H:%M:%S}"
