"""The released PanDA clients, unmodified, against ailuro (gunicorn + PostgreSQL).

The clients live in their own pinned virtualenv, var/clients-venv (scripts/clients.sh, built by
the `clients_venv` fixture on first use). Every client call runs under `timeout`: `bps submitcmd`
retries a failed upload forever.

* `bps ping` (the CLI) and PanDAService.ping() through the iDDS relay;
* panda-client's `Client.hello()` (GET /api/v1/system/is_alive);
* PanDAService.prepare()/submit() of a GenericWorkflow built in Python (no Butler): the request
  id the client keeps is a workflow of the token's user, with its tasks named as BPS named them;
* panda-client's putFile / getFile through the user cache.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.services import token_create
from dispatcher.models import Job, JobDependency, Task, Workflow
from pandacompat.models import CacheFile
from tests.ailuro.server import AiluroServer
from tests.factories import QueueFactory, SiteFactory
from tests.interop.conftest import client_env, last_json, run_client

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DRIVER = Path(__file__).with_name("bps_driver.py")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AiluroServer]:
    running = AiluroServer(tmp_path, {"AILURO_PANDA_CACHE_DIR": str(tmp_path / "panda-cache")})
    running.start()
    yield running
    running.stop()


def test_bps_ping_succeeds_and_a_bad_token_fails(
    clients_venv: Path, server: AiluroServer, tmp_path: Path
) -> None:
    token = token_create(username="alice")
    argv = [
        str(clients_venv / "bin" / "bps"),
        "ping",
        "--wms-service-class",
        "lsst.ctrl.bps.panda.PanDAService",
    ]
    good = run_client(argv, client_env(clients_venv, server, token, tmp_path / "home"), tmp_path)
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    bad = run_client(
        argv, client_env(clients_venv, server, "ail_revoked-or-unknown", tmp_path / "home"), tmp_path
    )
    assert bad.returncode != 0
    assert "401" in bad.stdout + bad.stderr or "invalid" in bad.stdout + bad.stderr


def test_panda_service_ping_goes_through_the_relay(
    clients_venv: Path, server: AiluroServer, tmp_path: Path
) -> None:
    env = client_env(clients_venv, server, token_create(username="alice"), tmp_path / "home")
    result = run_client([str(clients_venv / "bin" / "python"), str(DRIVER), "ping"], env, tmp_path)
    assert last_json(result) == {"ping": [0, None]}


def test_panda_client_hello_finds_ailuro_alive(
    clients_venv: Path, server: AiluroServer, tmp_path: Path
) -> None:
    env = client_env(clients_venv, server, token_create(username="alice"), tmp_path / "home", vo="atlas")
    code = "import json; from pandaclient import Client; print(json.dumps(Client.hello()))"
    result = run_client([str(clients_venv / "bin" / "python"), "-c", code], env, tmp_path)
    assert last_json(result) == [0, "alive"]


def test_panda_service_submit_lands_as_a_workflow_of_the_tokens_user(
    clients_venv: Path, server: AiluroServer, tmp_path: Path
) -> None:
    site = SiteFactory(name="SLAC_Rubin")
    QueueFactory(name="SLAC_Rubin", site=site, max_rss_mb=16000, max_cores=4, max_walltime_s=100_000)
    env = client_env(clients_venv, server, token_create(username="alice"), tmp_path / "home")
    work = tmp_path / "bps"
    result = run_client(
        [str(clients_venv / "bin" / "python"), str(DRIVER), "submit", str(work), "wire_wf"], env, tmp_path
    )
    run_id = last_json(result)["run_id"]
    workflow = Workflow.objects.get(pk=run_id)
    assert (workflow.name, workflow.owner.username) == ("wire_wf", "alice")
    tasks = {t.label: t for t in Task.objects.filter(workflow=workflow)}
    assert sorted(tasks) == ["wire_wf_01_isr_01", "wire_wf_02_calibrate_01", "wire_wf_03_finalJob_01"]
    calibrate = tasks["wire_wf_02_calibrate_01"]
    assert (calibrate.memory_mb, calibrate.cores, calibrate.walltime_s, calibrate.max_attempts) == (
        4096,
        2,
        600,
        3,
    )
    jobs = {j.name: j for j in Job.objects.filter(workflow=workflow)}
    assert sorted(jobs) == ["calibrate_903342_10", "isr_903342_10", "isr_903342_11", "wire_wf_03_finalJob_01"]
    assert (
        "isr_903342_10+qgraphNodeId:aaaa-1111+qgraphId:1700000000.123-4567" in jobs["isr_903342_10"].command
    )
    assert ("isr_903342_10", "calibrate_903342_10") in set(
        JobDependency.objects.filter(child__workflow=workflow).values_list("parent__name", "child__name")
    )


def test_panda_client_uploads_reuses_and_downloads_a_sandbox(
    clients_venv: Path, server: AiluroServer, tmp_path: Path
) -> None:
    env = client_env(clients_venv, server, token_create(username="alice"), tmp_path / "home", vo="atlas")
    sandbox = tmp_path / "client" / "jobO.1b2c3d4e-0000-4000-8000-000000000001.tar.gz"
    sandbox.parent.mkdir()
    subprocess.run(["tar", "czf", str(sandbox), "-C", str(tmp_path), "home"], check=True)
    code = (
        "import json, sys; from pandaclient import Client\n"
        "first = Client.putFile(sys.argv[1], reuseSandbox=True)\n"
        "again = Client.putFile(sys.argv[1], reuseSandbox=True)\n"
        "got = Client.getFile(sys.argv[2], output_path=sys.argv[3])\n"
        "print(json.dumps([first, again, got[0]]))\n"
    )
    out = tmp_path / "downloaded.tar.gz"
    result = run_client(
        [str(clients_venv / "bin" / "python"), "-c", code, str(sandbox), sandbox.name, str(out)],
        env,
        tmp_path,
    )
    first, again, got = last_json(result)
    assert first == [0, "True"]
    assert again == [0, f"NewFileName:{sandbox.name}"]
    assert got == 0
    assert out.read_bytes() == sandbox.read_bytes()
    assert CacheFile.objects.get().name == sandbox.name
