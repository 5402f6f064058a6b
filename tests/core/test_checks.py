"""Deploy checks a production operator relies on: `check --deploy --fail-level WARNING` fails on
settings that are only right for the embedded run."""

from __future__ import annotations

from pathlib import Path

from tests.core.startup import manage_check

PRODUCTION_LIKE = {
    "SECRET_KEY": "ci-8f3Kq1Zr7Lm2Vx9Pw4Tn6Yb0Hc5Jd-Ue3Ga7So1Fi9Wk2Ql4Mz8Ry6Xt0Bv",  # noqa: S106 (a test value)
    "DEBUG": "false",
    "AILURO_HTTPS": "true",
    "ALLOWED_HOSTS": "ailuro.example.org",
    "DATABASE_URL": "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "AILURO_CACHE_URL": "redis://127.0.0.1:6379/1",
}


def test_anonymous_read_left_on_fails_the_deploy_check(tmp_path: Path) -> None:
    result = manage_check(tmp_path, "--deploy", "--fail-level", "WARNING", **PRODUCTION_LIKE)

    assert result.returncode != 0
    assert "ailuro.W003" in result.stderr
    assert "AILURO_ANONYMOUS_READ=false" in result.stderr


def test_a_production_configuration_passes_the_deploy_check(tmp_path: Path) -> None:
    result = manage_check(
        tmp_path, "--deploy", "--fail-level", "WARNING", AILURO_ANONYMOUS_READ="false", **PRODUCTION_LIKE
    )

    assert result.returncode == 0, result.stderr
    assert "ailuro.W" not in result.stderr + result.stdout


def test_a_deployment_without_a_shared_cache_is_warned(tmp_path: Path) -> None:
    settings = {**PRODUCTION_LIKE, "AILURO_ANONYMOUS_READ": "false", "AILURO_CACHE_URL": ""}
    result = manage_check(tmp_path, "--deploy", "--fail-level", "WARNING", **settings)

    assert result.returncode != 0
    assert "ailuro.W015" in result.stderr
    assert "AILURO_CACHE_URL=redis://" in result.stderr


def test_a_cache_url_that_is_not_redis_stops_start_up(tmp_path: Path) -> None:
    result = manage_check(tmp_path, AILURO_CACHE_URL="memcached://127.0.0.1:11211")

    assert result.returncode != 0
    assert "AILURO_CACHE_URL must be a redis://" in result.stderr


def test_a_trusted_proxy_that_is_not_a_network_stops_start_up(tmp_path: Path) -> None:
    result = manage_check(tmp_path, AILURO_TRUSTED_PROXIES="10.0.0.0/8,proxy.example.org")

    assert result.returncode != 0
    assert "'proxy.example.org' is not an address or network" in result.stderr
