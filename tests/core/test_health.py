"""/healthz and /readyz in process: shapes, status codes, what they touch, what they are exempt from."""

from __future__ import annotations

import os

import pytest
from django.db.migrations.recorder import MigrationRecorder

from tests.ailuro.server import free_port

LIVE_BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")


def test_healthz_answers_alive_without_touching_the_database(client):
    # No `db` fixture: pytest-django makes any database access in this test an error.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert response["Cache-Control"] == "no-store"


def test_probes_answer_head_and_refuse_writes(client, db):
    assert client.head("/healthz").status_code == 200
    assert client.head("/readyz").status_code in (200, 503)
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


@pytest.mark.django_db
def test_readyz_is_ready_with_each_part_named(client, settings):
    assert LIVE_BROKER.split("://")[0] != "memory", "the suite runs with a real broker (scripts/test.sh)"
    settings.CELERY_BROKER_URL = LIVE_BROKER
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["migrations"] == "applied"
    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["broker"]["transport"] == LIVE_BROKER.split("://")[0]
    assert "Retry-After" not in response


@pytest.mark.django_db
def test_readyz_skips_the_in_process_broker_of_the_embedded_run(client, settings):
    settings.CELERY_BROKER_URL = "memory://"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"]["status"] == "skipped"


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_readyz_names_the_broker_when_it_is_down(client, settings, scheme):
    settings.CELERY_BROKER_URL = scheme.format(port=free_port())  # nothing listens there
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert body["status"] == "unavailable"
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["status"] == "failing"
    assert "cannot reach the broker" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["status"] == "ok"  # the other parts still report


@pytest.mark.django_db
def test_readyz_names_the_database_when_a_migration_is_missing(client, settings):
    """The code on disk is ahead of the database: a new image before its migrations ran, or a
    restore of an older backup. Forgetting one applied migration (rolled back with the test)."""
    settings.CELERY_BROKER_URL = "memory://"
    newest = MigrationRecorder.Migration.objects.filter(app="core").order_by("-id").first()
    assert newest is not None
    newest.delete()
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["database"]
    assert body["checks"]["database"]["error"] == "1 unapplied migrations (run manage.py migrate)"
    assert body["checks"]["database"]["unapplied"] == [f"core.{newest.name}"]


@pytest.mark.django_db
def test_probes_need_no_login_no_https_and_no_rate_budget(client, settings):
    """Kubelets and load balancers call over plain HTTP, anonymously, every few seconds."""
    settings.CELERY_BROKER_URL = "memory://"
    settings.AILURO = {**settings.AILURO, "ANONYMOUS_READ": False}
    settings.SECURE_SSL_REDIRECT = True
    settings.AILURO_RATE_LIMITS = {"login": "1/hour", "pilot": "1/hour"}
    assert client.get("/jobs/").status_code == 301  # the redirect to HTTPS is on for other pages
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_answers_even_when_the_migration_graph_is_broken(client, settings, tmp_path, monkeypatch):
    """Code whose migrations name a parent that does not exist (a bad merge, a deleted file)."""
    package = tmp_path / "broken_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_initial.py").write_text(
        "from django.db import migrations\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('core', '9999_does_not_exist')]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.MIGRATION_MODULES = {"harvester": "broken_migrations"}
    settings.CELERY_BROKER_URL = "memory://"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["error"] == "cannot compare the migrations (NodeNotFoundError)"
