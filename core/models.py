"""Cross-cutting tables: API tokens, OIDC identities, loop leases and the loops' last runs. No
domain models live here."""

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
    """A named, expiring lock so a loop runs in one place at a time (docs/architecture.md#loops)."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%H:%M:%S}"


class LoopStatus(models.Model):
    """The latest run of each loop, one row per loop, rewritten by every run that held its lease
    (`core.loops.loop_run`). `core.loop_health` reads it in one query and compares `succeeded_at`
    with each loop's allowed lag (`settings.AILURO_LOOPS`), for /readyz and the monitor."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200, help_text="host:pid:tag of the process that ran it")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_s = models.FloatField()
    done = models.BigIntegerField(help_text="work done: the sum of what the run's steps returned")
    steps = models.IntegerField()
    # Empty after a run that completed; the exception of a run that raised (step or time limit).
    error = models.TextField(blank=True)
    # The end of the last run that completed; kept when a later run fails.
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "loop statuses"

    def __str__(self) -> str:
        return f"{self.name}: {self.done} in {self.duration_s:.1f} s at {self.finished_at:%H:%M:%S}"


class OidcAccount(models.Model):
    """Links a Django user to one subject of one identity provider.

    Users are found by (issuer, sub), the only pair OIDC promises to be stable and unique, never by
    email or by a username an IdP user could choose to match a local account (mozilla-django-oidc
    issue #102).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_accounts")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="oidcaccount_issuer_subject_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer} → {self.user}"


class OidcRobot(models.Model):
    """A service identity for client-credentials tokens: a pilot fleet bound to queues, a campaign robot.

    A bearer JWT is this robot only when both its client (`client_id`/`azp`) and its `sub` match, so a
    user who picks the robot's name as login name at the IdP does not become the robot.
    """

    name = models.CharField(max_length=100, unique=True)
    client_id = models.CharField(max_length=255)
    subject = models.CharField(max_length=255, unique=True, help_text="`sub` of the client's tokens.")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_robot")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PILOT)
    # Pilot robots are bound to these queues; empty means not bound (as for ApiToken.queues).
    queues = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="oidcrobot_role_valid"),
        ]

    def __str__(self) -> str:
        return f"robot {self.name} ({self.client_id}, {self.role})"
