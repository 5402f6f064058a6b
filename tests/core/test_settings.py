from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.startup import manage_check


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://u:p@h:notaport/db"}, "DATABASE_URL"),
        ({"AILURO_MAX_DAG_JOBS": "lots"}, "AILURO_MAX_DAG_JOBS"),
        ({"AILURO_TASK_CHUNK_SIZE": "0"}, "AILURO_TASK_CHUNK_SIZE"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"CELERY_BROKER_URL": "carrier-pigeon://x"}, "CELERY_BROKER_URL"),
        ({"AILURO_LOG_LEVEL": "LOUD"}, "AILURO_LOG_LEVEL"),
        ({"AILURO_RETRY_AFTER_S": "0"}, "AILURO_RETRY_AFTER_S"),
        (
            {"AILURO_CAMPAIGN_CATALOGS": '{"raws": {"table": "raw", "columns": []}}'},
            "AILURO_CAMPAIGN_CATALOGS",
        ),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_variable(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = manage_check(tmp_path, **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr.splitlines()[-1]


def test_the_default_configuration_starts_embedded_and_keeps_its_secret_key(tmp_path: Path) -> None:
    first = manage_check(tmp_path)
    key = (tmp_path / "secret_key").read_text()
    second = manage_check(tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "secret_key").read_text() == key
    assert len(key) >= 50
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.django_db
@pytest.mark.usefixtures("postgres_only")
def test_postgresql_sessions_plan_without_jit_and_with_generic_plans() -> None:
    """Every connection starts with JIT off (a monitor list read of 15 ms once compiled for
    ~100 ms) and generic plans for the prepared pilot statements; a page's RESET returns there."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET jit = on")
        cursor.execute("RESET jit")
        cursor.execute("SHOW jit")
        assert cursor.fetchone() == ("off",)
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone() == ("force_generic_plan",)
