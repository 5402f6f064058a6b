"""System checks with stable ids: misconfiguration shows up in `manage.py check`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.database, deploy=True)
def check_production_database(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3"):
        return [
            Warning(
                "SQLite is for the embedded run; production needs PostgreSQL.",
                hint="Set DATABASE_URL=postgres://user:password@host:5432/ailuro",
                id="ailuro.W001",
            )
        ]
    return []


@register(deploy=True)
def check_broker(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if settings.CELERY_BROKER_URL.startswith("memory://"):
        return [
            Warning(
                "The in-memory Celery broker only works inside one process (embedded run).",
                hint="Set CELERY_BROKER_URL=redis://127.0.0.1:6379/0 or amqp://…",
                id="ailuro.W002",
            )
        ]
    return []
