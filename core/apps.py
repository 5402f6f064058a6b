from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "ailuro core"

    def ready(self) -> None:
        from core import (
            checks,  # noqa: F401  (registers the system checks)
            loop_health,  # noqa: F401  (stamps PROCESS_STARTED_AT as the process starts Django)
            schema,  # noqa: F401  (registers the OpenAPI bearer schemes)
        )
