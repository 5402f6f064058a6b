from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

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

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Workers are rows of the provisioner (every field read-only here): an "add" form would
        # have no field and save a worker without a queue.
        return False
