from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture
def postgres_only() -> None:
    """Races and lock behaviour are PostgreSQL's; the suite runs on PostgreSQL in CI."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL=postgres://…)")


@pytest.fixture
def default_retry_rules() -> None:
    """The rules migration 0002 seeds; transactional tests flush the table, so tests that rely on
    the defaults ask for them again (idempotent)."""
    from dispatcher.models import RetryRule
    from dispatcher.retry import DEFAULT_RULES

    for rule in DEFAULT_RULES:
        fields = dict(rule)
        RetryRule.objects.get_or_create(name=fields.pop("name"), defaults=fields)
