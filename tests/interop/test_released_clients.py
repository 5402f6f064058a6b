"""The released PanDA clients, unmodified, against ailuro (gunicorn + PostgreSQL).

The clients live in their own pinned virtualenv, var/clients-venv (scripts/clients.sh, built by
the `clients_venv` fixture on first use). Every client call runs under `timeout`: `bps submitcmd`
retries a failed upload forever.

* `bps ping` (the CLI) and PanDAService.ping() through the iDDS relay;
* panda-client's `Client.hello()` (GET /api/v1/system/is_alive);
* PanDAService.prepare()/submit() of a GenericWorkflow built in Python (no Butler): the request
  id the client keeps is a workflow of the token's user, with its tasks named as BPS named them;
* panda-client's putFile / getFile through the user cache;
* Rubin's `bps` driving a workflow through ailuro: report, status, restart and cancel, and a
  submission sent in steps, with real `ailuro pilot` processes running the jobs' commands
  (brokerage and the rollup are called here, as the loops would). The workflow
  (bps_driver.py `submit_dag`): isr ×3 → calibrate ×3 → coadd (one job gathering the three
  calibrates) and a finalJob; the command is a real shell line, and `calibrate_903342_11` exits 3
  while a flag file exists.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.services import token_create
from dispatcher.loops import rollup_one_batch
from dispatcher.models import Job, JobDependency, Task, Workflow
from dispatcher.services import broker_one_batch
from pandacompat.models import CacheFile, WorkflowStep
from tests.ailuro.server import AiluroServer, pilot_token_file, run_pilot
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


# --- bps on a workflow run by real pilots -----------------------------------------------------

QUEUE = "SLAC_Rubin"
FAIL_JOB = "calibrate_903342_11"
FINAL_JOB = "dag_wf_04_finalJob_01"
LABELS = ["isr", "calibrate", "coadd", "finalJob"]


@pytest.fixture
def rubin_queue() -> str:
    site = SiteFactory(name=QUEUE)
    QueueFactory(name=QUEUE, site=site, max_rss_mb=16000, max_cores=4, max_walltime_s=100_000)
    return QUEUE


class Bps:
    """The released clients as a Rubin user runs them, against one server."""

    def __init__(self, venv: Path, server: AiluroServer, tmp: Path) -> None:
        self.venv = venv
        self.tmp = tmp
        self.env = client_env(venv, server, token_create(username="alice"), tmp / "home")

    def driver(self, *argv: str) -> Any:
        return last_json(
            run_client([str(self.venv / "bin" / "python"), str(DRIVER), *argv], self.env, self.tmp)
        )

    def cli(self, *argv: str) -> str:
        result = run_client(
            [
                str(self.venv / "bin" / "bps"),
                *argv,
                "--wms-service-class",
                "lsst.ctrl.bps.panda.PanDAService",
            ],
            self.env,
            self.tmp,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    def submit_dag(self, name: str, flag: Path, max_request_length: int | None = None) -> tuple[int, bool]:
        """(run id, whether the client sent the workflow in steps)."""
        argv = ["submit_dag", str(self.tmp / name), name, str(flag)]
        if max_request_length is not None:
            argv.append(str(max_request_length))
        submitted = self.driver(*argv)
        return int(submitted["run_id"]), bool(submitted["with_steps"])


def settle(server: AiluroServer, queue: str, token: Path, workdir: Path) -> None:
    """Brokerage and a pilot, wave after wave, until no job is released; then the rollup."""
    stderr = ""
    for _ in range(12):
        broker_one_batch()
        if not Job.objects.filter(jobstatus="activated").exists():
            rollup_one_batch()
            return
        # BPS asks 25 h for a finalJob (request_walltime 90000 s): the pilot must live longer.
        result = run_pilot(server.url, queue, token, workdir, "--lifetime", "100000")
        assert result.returncode == 0, result.stderr[-2000:]
        stderr = result.stderr
    states = list(Job.objects.filter(jobstatus="activated").values())
    raise AssertionError(f"jobs kept coming: {states}; last pilot: {stderr[-2000:]}")


def monitor_json(server: AiluroServer, path: str) -> Any:
    with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def jobs_by_name(workflow_id: int) -> dict[str, Job]:
    return {j.name: j for j in Job.objects.filter(workflow_id=workflow_id)}


def test_bps_report_restart_and_status_on_a_workflow_with_a_failure(
    clients_venv: Path, server: AiluroServer, rubin_queue: str, tmp_path: Path
) -> None:
    bps = Bps(clients_venv, server, tmp_path)
    token = pilot_token_file(tmp_path, [rubin_queue])
    flag = tmp_path / "calibrate-fails"
    flag.touch()
    run_id, in_steps = bps.submit_dag("dag_wf", flag)
    assert not in_steps
    workflow = Workflow.objects.get(pk=run_id)
    assert (workflow.owner.username, workflow.name) == ("alice", "dag_wf")
    coadd_parents = JobDependency.objects.filter(child__workflow=workflow, child__name="coadd_9813")
    assert sorted(coadd_parents.values_list("parent__name", flat=True)) == [
        "calibrate_903342_10",
        "calibrate_903342_11",
        "calibrate_903342_12",
    ]

    settle(server, rubin_queue, token, tmp_path / "pilot")
    jobs = jobs_by_name(run_id)
    assert (jobs[FAIL_JOB].jobstatus, jobs[FAIL_JOB].transexitcode) == ("failed", 3)
    assert jobs["coadd_9813"].jobstatus == "pruned"
    # BPS's finalJob runs after the failure, as on PanDA (an ailuro final job).
    assert jobs[FINAL_JOB].jobstatus == "finished"
    assert {jobs[f"isr_903342_{v}"].jobstatus for v in ("10", "11", "12")} == {"finished"}

    # PanDAService.report (what `bps report --return-exit-codes` prints) against the monitor.
    [report] = bps.driver("report", str(run_id))["reports"]
    monitor = monitor_json(server, f"/workflow/{run_id}/?json")
    assert (report["wms_id"], report["operator"], report["run"]) == (str(run_id), "alice", "dag_wf")
    assert report["state"] == "SUCCEEDED"  # `bps report` counts an iDDS SubFinished run as succeeded
    assert sorted(report["job_summary"]) == sorted(LABELS)
    by_label: dict[str, dict[str, int]] = {}
    for task in monitor["tasks"]:
        label = re.sub(r"^dag_wf_\d+_(.*)_\d+$", r"\1", task["label"])
        by_label[label] = task["counts"]
    for label, counts in by_label.items():
        summary = report["job_summary"][label]
        assert summary["SUCCEEDED"] == counts.get("finished", 0), label
        assert summary["FAILED"] == counts.get("failed", 0), label
        assert summary["PRUNED"] == counts.get("pruned", 0) + counts.get("cancelled", 0), label
    assert report["total_number_jobs"] == sum(monitor["counts"].values()) == 8
    failed = monitor_json(server, f"/jobs/?json&workflow={run_id}&jobstatus=failed")
    failed_rows = failed["jobs"] if isinstance(failed, dict) else failed
    assert [row["transexitcode"] for row in failed_rows] == [3]
    # A task whose jobs were all pruned is Failed in iDDS terms: bps asks for its exit codes too.
    assert report["exit_code_summary"] == {"calibrate": [3], "coadd": []}

    # The CLIs.
    text = bps.cli("report", "--id", str(run_id), "--return-exit-codes")
    counts_rows: dict[str, list[str]] = {}
    error_rows: dict[str, list[str]] = {}
    for words in (line.split() for line in text.splitlines()):
        if words and words[0] in LABELS:
            # The first table has the job counts, the second the exit codes.
            (error_rows if words[0] in counts_rows else counts_rows)[words[0]] = words[1:]
    for label in LABELS:
        counts = by_label[label]
        # Columns: UNKNOWN MISFIT UNREADY READY PENDING RUNNING DELETED HELD SUCCEEDED FAILED PRUNED EXPECTED
        assert counts_rows[label][8:] == [
            str(counts.get("finished", 0)),
            str(counts.get("failed", 0)),
            str(counts.get("pruned", 0)),
            str(sum(counts.values())),
        ], label
    # PAYLOAD ERROR COUNT, PAYLOAD ERROR CODES, INFRASTRUCTURE ERROR COUNT, INFRASTRUCTURE ERROR CODES
    # (bps files exit codes it does not know as payload errors under infrastructure).
    assert error_rows["calibrate"] == ["0", "None", "1", "3"]
    assert bps.driver("status", str(run_id))["state"] == "FAILED"
    assert str(run_id) in json.dumps(bps.driver("list", str(run_id)))

    # `bps restart`: only the failed job and the jobs pruned because of it run again.
    before = {name: (j.jobstatus, j.attemptnr) for name, j in jobs.items()}
    flag.unlink()
    bps.cli("restart", "--id", str(run_id))
    settle(server, rubin_queue, token, tmp_path / "pilot")
    after = jobs_by_name(run_id)
    assert {name: j.jobstatus for name, j in after.items()} == dict.fromkeys(after, "finished")
    assert after[FAIL_JOB].attemptnr == before[FAIL_JOB][1] + 1
    assert after["coadd_9813"].attemptnr == 1  # pruned, never dispatched: its first attempt runs now
    for name, (status, attemptnr) in before.items():
        if status == "finished" and name != FINAL_JOB:
            assert after[name].attemptnr == attemptnr, name
    # The final job waits again for the jobs run again, and runs once more after them.
    assert after[FINAL_JOB].attemptnr == before[FINAL_JOB][1] + 1
    assert Workflow.objects.get(pk=run_id).status == "done"
    assert bps.driver("status", str(run_id))["state"] == "SUCCEEDED"
    [report] = bps.driver("report", str(run_id))["reports"]
    assert report["job_state_counts"]["SUCCEEDED"] == 8


def test_bps_cancel_stops_a_workflow(
    clients_venv: Path, server: AiluroServer, rubin_queue: str, tmp_path: Path
) -> None:
    bps = Bps(clients_venv, server, tmp_path)
    run_id, _ = bps.submit_dag("cancelled_wf", tmp_path / "no-flag")
    bps.cli("cancel", "--id", str(run_id))
    assert Workflow.objects.get(pk=run_id).status == "cancelled"
    assert set(Job.objects.filter(workflow_id=run_id).values_list("jobstatus", flat=True)) == {"cancelled"}
    assert bps.driver("status", str(run_id))["state"] == "DELETED"
    other = Bps(clients_venv, server, tmp_path / "bob")
    other.env = client_env(clients_venv, server, token_create(username="bob"), tmp_path / "bob-home")
    refused = other.driver("cancel", str(run_id))["cancel"]
    assert refused[0] is False and "belongs to another user" in refused[1]
    assert Workflow.objects.get(pk=run_id).owner.username == "alice"


def test_a_workflow_sent_in_steps_is_accepted_and_runs(
    clients_venv: Path, server: AiluroServer, rubin_queue: str, tmp_path: Path
) -> None:
    bps = Bps(clients_venv, server, tmp_path)
    run_id, in_steps = bps.submit_dag("steps_wf", tmp_path / "no-flag", max_request_length=3000)
    assert in_steps
    assert not WorkflowStep.objects.exists()  # used and deleted
    workflow = Workflow.objects.get(pk=run_id)
    assert Task.objects.filter(workflow=workflow).count() == 4
    assert Job.objects.filter(workflow=workflow).count() == 8
    assert JobDependency.objects.filter(child__workflow=workflow, child__name="coadd_9813").count() == 3
    settle(server, rubin_queue, pilot_token_file(tmp_path, [rubin_queue]), tmp_path / "pilot")
    assert set(Job.objects.filter(workflow=workflow).values_list("jobstatus", flat=True)) == {"finished"}
    assert "status: SUCCEEDED" in bps.cli("status", "--id", str(run_id))
