"""/readyz of a real gunicorn server while its PostgreSQL goes away and comes back, and while its
broker is unreachable. The database is a private cluster started for this module (tests/pgcluster.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ailuro.server import ROOT, AiluroServer, free_port
from tests.pgcluster import PrivateCluster

pytestmark = pytest.mark.slow


def probe(url: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def probe_until(url: str, status: int, within_s: float = 15) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The first answer with `status`, or the last answer when none came in time."""
    deadline = time.monotonic() + within_s
    while True:
        answer = probe(url)
        if answer[0] == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def readyz_of(
    tmp_path: Path, database_url: str, broker_url: str = "memory://"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Start a server on `database_url`, ask its /readyz once, stop it."""
    srv = AiluroServer(tmp_path, env={"DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url})
    srv.start()
    try:
        return probe(srv.url + "/readyz")
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    pg = PrivateCluster()
    try:
        pg.start()
        pg.createdb("ailuro_ready")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env={**_env(), "DATABASE_URL": pg.url("ailuro_ready")},
            check=True,
            timeout=300,
        )
        yield pg
    finally:
        pg.destroy()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


@pytest.fixture
def server(cluster: PrivateCluster, tmp_path: Path) -> Iterator[AiluroServer]:
    srv = AiluroServer(
        tmp_path, env={"DATABASE_URL": cluster.url("ailuro_ready"), "CELERY_BROKER_URL": "memory://"}
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        if not cluster.running():
            cluster.start()


def test_readyz_follows_the_database_down_and_up_again(cluster, server):
    status, _, body = probe(server.url + "/readyz")
    assert status == 200, body
    assert body["checks"]["database"]["status"] == "ok"

    cluster.stop()
    status, headers, body = probe_until(server.url + "/readyz", 503)
    assert status == 503, body
    assert body["failing"] == ["database"]
    assert body["checks"]["database"]["status"] == "failing"
    assert "cannot query the database" in body["checks"]["database"]["error"]
    assert headers["Retry-After"] == "10"
    assert "127.0.0.1" not in json.dumps(body)  # no host names or ports in an anonymous answer
    # Liveness does not depend on the database: an orchestrator must not restart the web pods.
    assert probe(server.url + "/healthz")[0] == 200

    cluster.start()
    status, _, body = probe_until(server.url + "/readyz", 200)
    assert status == 200, body
    assert body["checks"]["database"]["status"] == "ok"


def test_readyz_names_an_unmigrated_database(cluster, tmp_path):
    cluster.createdb("ailuro_empty")
    status, _, body = readyz_of(tmp_path, cluster.url("ailuro_empty"))
    assert status == 503
    assert body["failing"] == ["database"]
    assert "unapplied migrations" in body["checks"]["database"]["error"]


def test_readyz_names_an_unreachable_broker(cluster, tmp_path):
    broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    status, headers, body = readyz_of(tmp_path, cluster.url("ailuro_ready"), broker)
    assert status == 503
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"]["status"] == "ok"
    assert headers["Retry-After"] == "10"


def test_the_runbook_backup_restores_into_a_ready_database(cluster, tmp_path):
    """docs/operator-guide/runbook.md#backup-and-restore: pg_dump custom format, pg_restore into an
    empty database; a server on the copy is ready (migrated, reachable)."""
    dump = cluster.dir / "ailuro.dump"  # the cluster's own folder: the tools may run as postgres
    cluster.tool(
        "pg_dump",
        "--format=custom",
        "--compress=6",
        "--no-owner",
        f"--file={dump}",
        cluster.url("ailuro_ready"),
    )
    assert "TABLE DATA public dispatcher_job" in cluster.tool("pg_restore", "--list", str(dump)).stdout
    cluster.createdb("ailuro_restored")
    cluster.tool(
        "pg_restore",
        f"--dbname={cluster.url('ailuro_restored')}",
        "--no-owner",
        "--jobs=2",
        "--exit-on-error",
        str(dump),
    )
    status, _, body = readyz_of(tmp_path, cluster.url("ailuro_restored"))
    assert status == 200, body
