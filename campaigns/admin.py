"""Admin: campaigns are read-only here; they change through campaigns.services (API, CLI, pages), so
every change is versioned and audited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from campaigns.models import ActionLog, Campaign, CampaignVersion, Group, GroupAttempt, Step


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Campaign)
class CampaignAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "owner", "status", "version", "created_at")
    list_filter = ("status",)
    search_fields = ("name",)


@admin.register(CampaignVersion)
class CampaignVersionAdmin(ReadOnlyAdmin):
    list_display = ("campaign", "version", "created_by", "created_at", "comment")
    search_fields = ("campaign__name",)


@admin.register(Step)
class StepAdmin(ReadOnlyAdmin):
    list_display = ("id", "campaign", "position", "name", "status", "breakpoint")
    list_filter = ("status",)


@admin.register(Group)
class GroupAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "campaign",
        "step",
        "name",
        "status",
        "attempt",
        "jobs_done",
        "jobs_total",
        "stalled",
    )
    list_filter = ("status", "stalled")
    search_fields = ("name",)


@admin.register(GroupAttempt)
class GroupAttemptAdmin(ReadOnlyAdmin):
    list_display = ("group", "attempt", "kind", "workflow", "campaign_version", "restarts", "created_by")
    list_filter = ("kind",)


@admin.register(ActionLog)
class ActionLogAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "campaign",
        "actor",
        "verb",
        "object_type",
        "object_id",
        "result",
        "message",
    )
    list_filter = ("verb", "result")
    search_fields = ("actor", "message")
