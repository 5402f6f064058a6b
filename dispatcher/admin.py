"""Admin: configuration (sites, queues, resource types, retry rules) is editable; the job database
is read-only here, because jobs change only through dispatcher.services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from dispatcher.models import (
    File,
    Job,
    JobAttempt,
    JobDependency,
    JobStatusLog,
    PayloadLog,
    Queue,
    ResourceType,
    RetryRule,
    Site,
    Task,
    Workflow,
)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """History and job rows: visible and searchable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "region", "tier", "description"]
    list_filter = ["region", "tier"]
    search_fields = ["name", "region"]


@admin.register(ResourceType)
class ResourceTypeAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "min_cores", "max_cores", "min_ram_per_core_mb", "max_ram_per_core_mb"]
    search_fields = ["name"]


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "site",
        "status",
        "max_rss_mb",
        "max_cores",
        "max_walltime_s",
        "plugin",
        "pilot_flavour",
        "max_workers",
    ]
    list_filter = ["status", "plugin", "pilot_flavour", "site__region", "site"]
    list_editable = ["status"]
    search_fields = ["name", "site__name"]
    filter_horizontal = ["resource_types"]
    fieldsets = [
        (None, {"fields": ["name", "site", "status", "description"]}),
        (
            "Limits",
            {
                "fields": [
                    "min_rss_mb",
                    "max_rss_mb",
                    "max_cores",
                    "max_walltime_s",
                    "max_disk_mb",
                    "resource_types",
                ]
            },
        ),
        (
            "Pilots",
            {
                "fields": [
                    "plugin",
                    "plugin_params",
                    "pilot_flavour",
                    "require_lease",
                    "max_workers",
                    "max_queued_workers",
                    "heartbeat_timeout_s",
                ]
            },
        ),
    ]


@admin.register(RetryRule)
class RetryRuleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "order",
        "name",
        "error_family",
        "code",
        "code_max",
        "diag_regex",
        "action",
        "scope_label",
        "active",
    ]
    list_display_links = ["name"]
    list_filter = ["action", "error_family", "active"]
    list_editable = ["order", "active"]
    search_fields = ["name", "diag_regex", "description"]


class TaskInline(ReadOnlyInline):
    model = Task
    fields = ("jeditaskid", "label", "chunk", "status", "priority", "memory_mb")
    readonly_fields = fields


@admin.register(Workflow)
class WorkflowAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "owner", "status", "priority", "attempt", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "owner__username"]
    date_hierarchy = "created_at"
    inlines = [TaskInline]


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = [
        "jeditaskid",
        "name",
        "label",
        "workflow",
        "status",
        "username",
        "priority",
        "max_attempts",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "label", "username", "=jeditaskid"]
    list_select_related = ["workflow"]


class AttemptInline(ReadOnlyInline):
    model = JobAttempt
    fields = (
        "attemptnr",
        "jobstatus",
        "queue",
        "node",
        "piloterrorcode",
        "transexitcode",
        "retry_action",
        "retry_reason",
        "endtime",
    )
    readonly_fields = fields


class StatusLogInline(ReadOnlyInline):
    model = JobStatusLog
    fields = ("time", "attemptnr", "previous", "jobstatus", "cause")
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = [
        "pandaid",
        "name",
        "label",
        "jobstatus",
        "queue",
        "attemptnr",
        "produsername",
        "piloterrorcode",
        "statechangetime",
    ]
    list_filter = ["jobstatus", "prodsourcelabel", "queue"]
    search_fields = ["=pandaid", "name", "label", "produsername"]
    list_select_related = ["queue"]
    show_full_result_count = (
        False  # an exact COUNT(*) over millions of jobs on every admin page view is too slow
    )
    inlines = [AttemptInline, StatusLogInline]


@admin.register(JobAttempt)
class JobAttemptAdmin(ReadOnlyAdmin):
    list_display = [
        "job",
        "attemptnr",
        "jobstatus",
        "queue",
        "piloterrorcode",
        "exeerrorcode",
        "transexitcode",
        "retry_action",
        "endtime",
    ]
    list_filter = ["jobstatus", "retry_action"]
    search_fields = ["=job__pandaid", "piloterrordiag"]
    show_full_result_count = False


@admin.register(JobDependency)
class JobDependencyAdmin(ReadOnlyAdmin):
    list_display = ["parent", "child"]
    search_fields = ["=parent__pandaid", "=child__pandaid"]
    show_full_result_count = False


@admin.register(File)
class FileAdmin(ReadOnlyAdmin):
    list_display = ["lfn", "role", "job", "dataset", "size", "status"]
    list_filter = ["role", "status"]
    search_fields = ["lfn", "dataset"]
    show_full_result_count = False


@admin.register(JobStatusLog)
class JobStatusLogAdmin(ReadOnlyAdmin):
    list_display = ["job", "attemptnr", "previous", "jobstatus", "time", "cause"]
    list_filter = ["jobstatus"]
    search_fields = ["=job__pandaid", "cause"]
    show_full_result_count = False


@admin.register(PayloadLog)
class PayloadLogAdmin(ReadOnlyAdmin):
    list_display = ["job", "attemptnr", "sequence", "received_at"]
    search_fields = ["=job__pandaid"]
    show_full_result_count = False
