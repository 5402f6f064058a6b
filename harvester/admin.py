from __future__ import annotations

from django.contrib import admin

from harvester.models import Worker


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "id",
        "queue",
        "plugin",
        "batch_id",
        "status",
        "node",
        "n_jobs",
        "exit_code",
        "submitted_at",
        "ended_at",
    ]
    list_filter = ["status", "plugin", "queue"]
    search_fields = ["batch_id", "node", "queue__name"]
    readonly_fields = [f.name for f in Worker._meta.fields]
    show_full_result_count = False
