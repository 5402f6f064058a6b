"""/healthz and /readyz in process: shapes, status codes, what they touch, what they are exempt from."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from config.loops import LOOPS, loop_named
from core.models import LoopStatus
from tests.ailuro.server import free_port
from tests.loop_runs import record_fresh_runs, record_run

LIVE_BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def fresh_loops(db: None) -> None:
    """Every loop of the table ran a second ago: the state of a deployment whose beat and
    workers are up (this test process runs none of them)."""
    record_fresh_runs()


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
def test_readyz_is_ready_with_each_part_named(client, settings, fresh_loops):
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
    assert body["checks"]["loops"] == {"status": "ok", "loops": len(LOOPS)}
    assert "Retry-After" not in response


@pytest.mark.django_db
def test_readyz_skips_the_in_process_broker_of_the_embedded_run(client, settings, fresh_loops):
    settings.CELERY_BROKER_URL = "memory://"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"]["status"] == "skipped"


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_readyz_names_the_broker_when_it_is_down(client, settings, scheme, fresh_loops):
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
def test_readyz_names_the_database_when_a_migration_is_missing(client, settings, fresh_loops):
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
    assert body["checks"]["loops"] == {"status": "skipped", "detail": "the database is failing"}


@pytest.mark.django_db
def test_probes_need_no_login_no_https_and_no_rate_budget(client, settings, fresh_loops):
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


# --- The loops part: each loop of the table completed a run within its allowed lag -----------------


@pytest.mark.django_db
def test_readyz_names_the_loop_whose_last_run_is_older_than_its_lag(client, settings, fresh_loops):
    """A stopped beat leaves every row as it was; the fastest loop goes stale first."""
    settings.CELERY_BROKER_URL = "memory://"
    allowed = settings.AILURO_LOOPS["brokerage"]["max_lag_s"]
    assert allowed == max(3 * 5.0, 5.0 + 90)  # 3 periods, at least a period and the hard limit
    record_run("brokerage", ago_s=allowed + 30)

    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert body["failing"] == ["loops"]
    loops = body["checks"]["loops"]
    assert loops["status"] == "failing"
    assert list(loops["stalled"]) == ["brokerage"]
    assert loops["stalled"]["brokerage"]["max_lag_s"] == allowed
    assert allowed + 30 <= loops["stalled"]["brokerage"]["lag_s"] < allowed + 40
    assert loops["error"].startswith("loops stalled: brokerage (")
    assert body["checks"]["database"]["status"] == "ok"

    # The loop runs again (Loop.run → core.loops.loop_run records the run): ready again.
    assert loop_named("brokerage").run() == 0
    assert LoopStatus.objects.get(name="brokerage").error == ""
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["loops"]["status"] == "ok"


@pytest.mark.django_db
def test_a_probe_asking_for_some_parts_is_judged_on_those_alone(client, settings, fresh_loops):
    """The load balancer's probe (`?part=database&part=broker`) keeps a web instance in service
    while a stopped beat makes /readyz name the stalled loop."""
    settings.CELERY_BROKER_URL = "memory://"
    record_run("brokerage", ago_s=settings.AILURO_LOOPS["brokerage"]["max_lag_s"] + 30)
    assert client.get("/readyz").status_code == 503

    response = client.get("/readyz?part=database&part=broker")
    assert response.status_code == 200, response.json()
    assert set(response.json()["checks"]) == {"database", "broker"}

    response = client.get("/readyz?part=loops")
    assert response.status_code == 503
    assert response.json()["failing"] == ["loops"]

    response = client.get("/readyz?part=database&part=disk")
    assert response.status_code == 400
    assert "unknown readiness part disk" in response.json()["detail"]


@pytest.mark.django_db
def test_readyz_keeps_a_loop_fresh_while_its_last_run_failed_within_the_lag(client, settings, fresh_loops):
    """A failed run leaves `succeeded_at` alone: stalled only once the last success is too old."""
    settings.CELERY_BROKER_URL = "memory://"
    row = LoopStatus.objects.get(name="rollup")
    row.error = "OperationalError: deadlock detected"
    row.save()
    assert client.get("/readyz").status_code == 200
    row.succeeded_at = timezone.now() - dt.timedelta(seconds=settings.AILURO_LOOPS["rollup"]["max_lag_s"] + 5)
    row.save()
    body = client.get("/readyz").json()
    assert body["failing"] == ["loops"]
    assert list(body["checks"]["loops"]["stalled"]) == ["rollup"]
    assert "deadlock" not in str(body)  # the run's error is the monitor's, not the probe's


@pytest.mark.django_db
def test_a_loop_that_never_ran_is_named_only_after_the_grace(client, settings, fresh_loops, monkeypatch):
    """A fresh deployment is ready while its beat comes up; a loop that never ran is named once this
    process has been up longer than the loop's lag plus AILURO_LOOP_GRACE_S."""
    from core import loop_health

    settings.CELERY_BROKER_URL = "memory://"
    settings.AILURO_LOOP_GRACE_S = 300
    LoopStatus.objects.filter(name="watcher").delete()
    allowed = settings.AILURO_LOOPS["watcher"]["max_lag_s"]

    monkeypatch.setattr(
        loop_health, "PROCESS_STARTED_AT", timezone.now() - dt.timedelta(seconds=allowed + 200)
    )
    assert client.get("/readyz").status_code == 200

    monkeypatch.setattr(
        loop_health, "PROCESS_STARTED_AT", timezone.now() - dt.timedelta(seconds=allowed + 400)
    )
    body = client.get("/readyz").json()
    assert body["failing"] == ["loops"]
    assert body["checks"]["loops"]["stalled"]["watcher"]["succeeded_at"] is None
    assert list(body["checks"]["loops"]["stalled"]) == ["watcher"]


@pytest.mark.django_db
def test_readyz_judges_the_loops_of_the_table_only(client, settings, fresh_loops):
    """A row of a loop no longer in the table is not judged; an empty table skips the part."""
    settings.CELERY_BROKER_URL = "memory://"
    record_run("retired", ago_s=10 * 86400)
    assert client.get("/readyz").status_code == 200
    settings.AILURO_LOOPS = {}
    assert client.get("/readyz").json()["checks"]["loops"] == {
        "status": "skipped",
        "detail": "no loops configured",
    }
