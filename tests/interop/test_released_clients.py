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

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.services import token_create
from dispatcher.models import Job, JobDependency, Task, Workflow
from pandacompat.models import CacheFile
from tests.ailuro.server import ROOT, AiluroServer
from tests.factories import QueueFactory, SiteFactory

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DRIVER = Path(__file__).with_name("bps_driver.py")
CLIENT_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def clients_venv() -> Path:
    """scripts/clients.sh install: idempotent, ~1 minute on a clean machine."""
    subprocess.run([str(ROOT / "scripts" / "clients.sh"), "install"], check=True, timeout=1200)
    venv = ROOT / "var" / "clients-venv"
    assert (venv / "bin" / "bps").exists()
    return venv


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AiluroServer]:
    running = AiluroServer(tmp_path, {"AILURO_PANDA_CACHE_DIR": str(tmp_path / "panda-cache")})
    running.start()
    yield running
    running.stop()


def client_env(venv: Path, server: AiluroServer, token: str, home: Path, vo: str = "Rubin") -> dict[str, str]:
    """What a Rubin or ATLAS user exports to point the clients at ailuro (docs: Coming from PanDA)."""
    home.mkdir(parents=True, exist_ok=True)
    base = f"{server.url}/server/panda"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PANDA", "DATABASE_URL"))}
    env.update(
        {
            "PANDA_URL": base,
            "PANDA_URL_SSL": base,
            "PANDACACHE_URL": base,
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": vo,
            "PANDA_AUTH_ID_TOKEN": token,
            "PANDA_BEHIND_REAL_LB": "1",  # else importing pandaclient.Client resolves hosts
            "PANDA_VERIFY_HOST": "off",
            "PANDA_CONFIG_ROOT": str(home / ".pathena"),
            "HOME": str(home),
            "USER": "alice",
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            "PANDA_SYS": str(venv),
        }
    )
    return env


def run_client(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S + 10,
        check=False,
    )


def last_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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
