"""System checks with stable ids: misconfiguration shows up in `manage.py check`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


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


@register(deploy=True)
def check_anonymous_read(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Anonymous read is for the embedded run; a deployment opts in knowingly."""
    if settings.AILURO["ANONYMOUS_READ"]:
        return [
            Warning(
                "Anonymous read is on: anyone who reaches the server reads every workflow, job and payload log.",
                hint="Set AILURO_ANONYMOUS_READ=false (or keep it on only for a monitor that is public on purpose).",
                id="ailuro.W003",
            )
        ]
    return []


@register()
def check_oidc(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """OIDC settings that would fail at the first login or bearer request (docs/deployment/oidc.md)."""
    from core.roles import Role

    problems: list[CheckMessage] = []
    bad = {group: role for group, role in settings.OIDC_ROLE_GROUPS.items() if role not in Role.values}
    if bad:
        problems.append(
            Error(
                f"OIDC_ROLE_GROUPS maps groups to unknown roles: {bad}",
                hint=f"Roles are {', '.join(Role.values)}.",
                id="ailuro.E010",
            )
        )
    if settings.OIDC_DEFAULT_ROLE not in Role.values:
        problems.append(
            Error(
                f"OIDC_DEFAULT_ROLE {settings.OIDC_DEFAULT_ROLE!r} is not a role",
                hint=f"Roles are {', '.join(Role.values)}.",
                id="ailuro.E011",
            )
        )
    if settings.OIDC_ENABLED and not settings.OIDC_AUDIENCE:
        problems.append(
            Error(
                "OIDC_ISSUER is set but OIDC_AUDIENCE is empty: no bearer JWT could be accepted.",
                hint="Set OIDC_AUDIENCE to the API's audience/resource at the provider, e.g. urn:ailuro:api",
                id="ailuro.E012",
            )
        )
    if settings.OIDC_ENABLED and not (settings.OIDC_RP_CLIENT_ID and settings.OIDC_RP_CLIENT_SECRET):
        problems.append(
            Warning(
                "OIDC_ISSUER is set without OIDC_RP_CLIENT_ID/OIDC_RP_CLIENT_SECRET: browser login cannot work.",
                id="ailuro.W013",
            )
        )
    return problems


@register(deploy=True)
def check_oidc_https(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if settings.OIDC_ENABLED and not settings.OIDC_ISSUER.startswith("https://"):
        return [
            Warning(
                "OIDC_ISSUER is not an https:// URL: tokens and keys would travel unprotected.",
                id="ailuro.W014",
            )
        ]
    return []


@register(deploy=True)
def check_shared_cache(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Without a shared cache every process counts rate limits on its own: four gunicorn workers
    on two hosts let a client through eight times the configured rate."""
    if not settings.AILURO_CACHE_URL:
        return [
            Warning(
                "No shared cache: rate limits and token caches are per process.",
                hint="Set AILURO_CACHE_URL=redis://host:6379/1 (the broker's Redis, another database, does).",
                id="ailuro.W015",
            )
        ]
    return []
