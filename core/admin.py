from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from core.models import ApiToken, Lease, LoopStatus, OidcAccount, OidcRobot


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Tokens are created with `manage.py create_token` (the clear value is shown once, there);
    here they are listed and revoked."""

    list_display = [
        "key_prefix",
        "user",
        "name",
        "role",
        "queues",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["role", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["key_prefix", "user__username", "name"]
    readonly_fields = ["key_prefix", "user", "created_at", "last_used_at"]
    fields = [
        "key_prefix",
        "user",
        "name",
        "role",
        "queues",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        n = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{n} token(s) revoked.")


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "holder", "acquired_at", "expires_at"]


@admin.register(LoopStatus)
class LoopStatusAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Written by the loops only; here an operator sees when each one last ran and what it did."""

    list_display = ["name", "finished_at", "duration_s", "done", "steps", "succeeded_at", "error", "holder"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LoopStatus | None = None) -> bool:
        return False


@admin.register(OidcRobot)
class OidcRobotAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Robots are registered with `manage.py register_robot`; here they are reviewed and disabled."""

    list_display = ["name", "client_id", "subject", "role", "queues", "active", "created_at"]
    list_filter = ["role", "active"]
    search_fields = ["name", "client_id", "subject"]
    readonly_fields = ["user", "created_at"]


@admin.register(OidcAccount)
class OidcAccountAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["subject", "issuer", "user", "created_at"]
    search_fields = ["subject", "user__username"]
    readonly_fields = ["created_at"]
