"""ATLAS's panda-client, unmodified (var/clients-venv), against ailuro (gunicorn + PostgreSQL).

* `Client.submitJobs` of two JobSpecs built in the client's Python, `getJobStatus` reading them
  back in ailuro's states, `killJobs` cancelling one;
* `prun --noBuild --nJobs 3 --exec …` with a user's JWT from the test OIDC provider (prun decodes
  the token itself for the user's nickname), then real `ailuro pilot` processes run the three
  jobs: each downloads the sandbox prun uploaded from /cache/ and runs the exec, which prints a
  file of the sandbox;
* pbook's calls: `Client.getTaskStatus`, `PBookCore.show` and `PBookCore.kill`.

Every client runs under `timeout` (`run_client`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.services import token_create
from dispatcher.models import Job, PayloadLog, Task
from dispatcher.services import broker_one_batch
from tests.ailuro.server import AiluroServer, pilot_token_file, run_pilot
from tests.factories import QueueFactory
from tests.interop.conftest import ROLE_GROUPS, client_env, last_json, run_client
from tests.interop.oidc_provider import API_AUDIENCE, OidcProvider

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUEUE = "LOCAL_Q"
SECRET = "sandbox-file-says-42"


@pytest.fixture
def server(tmp_path: Path, oidc_provider: OidcProvider) -> Iterator[AiluroServer]:
    """gunicorn with the test provider as its identity provider (the OIDC_* variables)."""
    env = {
        "AILURO_PANDA_CACHE_DIR": str(tmp_path / "panda-cache"),
        "OIDC_ISSUER": oidc_provider.issuer,
        "OIDC_AUDIENCE": API_AUDIENCE,
        "OIDC_ROLE_GROUPS": ",".join(f"{group}={role}" for group, role in ROLE_GROUPS.items()),
        "OIDC_DEFAULT_ROLE": "user",
    }
    running = AiluroServer(tmp_path, env)
    running.start()
    yield running
    running.stop()


def python(venv: Path, code: str, env: dict[str, str], cwd: Path, *args: str) -> Any:
    return last_json(run_client([str(venv / "bin" / "python"), "-c", code, *args], env, cwd))


SUBMIT_JOBS = """
import json
from pandaclient import Client
from pandaclient.FileSpec import FileSpec
from pandaclient.JobSpec import JobSpec

jobs = []
for i, (trf, params) in enumerate([
    ("http://example.org/trf/user/runGen-00-00-02", "-j '' -p 'echo%20hello%20from%20runGen'"),
    ("/bin/echo", "hello from echo"),
]):
    job = JobSpec()
    job.jobName = f"pc-job-{i}"
    job.transformation = trf
    job.jobParameters = params
    job.computingSite = "LOCAL_Q"
    job.prodSourceLabel = "user"
    job.coreCount = 1
    job.minRamCount = 1000 + i
    job.maxWalltime = 600
    job.maxAttempt = 2
    job.currentPriority = 900
    log = FileSpec()
    log.lfn = f"pc-job-{i}.log.tgz"
    log.type = "log"
    log.dataset = "user.alice.log"
    job.addFile(log)
    jobs.append(job)
status, submitted = Client.submitJobs(jobs)
ids = [row[0] for row in submitted]
_, described = Client.getJobStatus(ids)
killed = Client.killJobs([ids[0]])
_, after = Client.getJobStatus(ids + [987654321])
print(json.dumps({
    "status": status,
    "submitted": [row[:2] for row in submitted],
    "described": [
        [j.PandaID, j.jobName, j.jobStatus, j.computingSite, j.minRamCount, [f.lfn for f in j.Files]]
        for j in described
    ],
    "killed": killed,
    "after": [None if j is None else [j.PandaID, j.jobStatus] for j in after],
}))
"""


def test_submit_status_and_kill_jobs_with_pandaclient(
    clients_venv: Path, server: AiluroServer, tmp_path: Path
) -> None:
    QueueFactory(name=QUEUE)
    env = client_env(clients_venv, server, token_create(username="alice"), tmp_path / "home", vo="atlas")

    out = python(clients_venv, SUBMIT_JOBS, env, tmp_path)

    jobs = {j.name: j for j in Job.objects.all()}
    ids = [jobs["pc-job-0"].pandaid, jobs["pc-job-1"].pandaid]
    assert out["status"] == 0
    assert out["submitted"] == [[ids[0], "pc-job-0"], [ids[1], "pc-job-1"]]
    assert out["described"] == [
        [ids[0], "pc-job-0", "defined", "NULL", 1000, ["pc-job-0.log.tgz"]],
        [ids[1], "pc-job-1", "defined", "NULL", 1001, ["pc-job-1.log.tgz"]],
    ]
    assert out["killed"] == [0, [True]]
    assert out["after"] == [[ids[0], "cancelled"], [ids[1], "defined"], None]
    assert Job.objects.get(pk=ids[0]).jobstatus == "cancelled"
    assert jobs["pc-job-0"].command.splitlines()[-1] == "echo hello from runGen"
    assert jobs["pc-job-1"].command == "/bin/echo hello from echo"
    assert {j.workflow.owner.username for j in jobs.values()} == {"alice"}


PBOOK = """
import json, sys
from pandaclient import Client, PBookCore

task_id, other = int(sys.argv[1]), int(sys.argv[2])
pbook = PBookCore.PBookCore()
pbook.init()
status = Client.getTaskStatus(task_id)
shown = pbook.show(format="json")
killed = pbook.kill(other)
again = Client.killTask(other)
print(json.dumps({
    "status": status,
    "shown": sorted([t["jediTaskID"], t["status"], t["nFilesFinished"]] for t in shown),
    "killed": killed,
    "again": again,
    "other_status": Client.getTaskStatus(other),
}))
"""


def test_prun_runs_its_exec_on_ailuro_pilots_and_pbook_sees_and_kills_tasks(
    clients_venv: Path, server: AiluroServer, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    queue = QueueFactory(name=QUEUE)
    jwt = oidc_provider.device_tokens("bob")["access_token"]
    env = client_env(clients_venv, server, jwt, tmp_path / "home", vo="atlas")
    work = tmp_path / "work"
    work.mkdir()
    (work / "message.txt").write_text(f"{SECRET}\n")
    (work / "run.sh").write_text('echo "job read: $(cat message.txt)"\n')
    prun = [
        str(clients_venv / "bin" / "prun"),
        "--noBuild",
        "--nJobs",
        "3",
        "--exec",
        "sh run.sh",
        "--outDS",
        "user.bob.test",
        "--site",
        QUEUE,
    ]

    submitted = run_client(prun, env, work)

    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    task = Task.objects.get()
    assert f"jediTaskID={task.pk}" in submitted.stdout + submitted.stderr
    assert task.workflow.owner.username == "bob"
    jobs = list(Job.objects.filter(task=task).order_by("pandaid"))
    assert len(jobs) == 3

    assert broker_one_batch() == 3
    ran = run_pilot(
        server.url, QUEUE, pilot_token_file(tmp_path, [queue.name]), tmp_path / "pilot", timeout=120
    )

    assert ran.returncode == 0, ran.stderr[-3000:]
    for job in jobs:
        job.refresh_from_db()
        output = "".join(
            PayloadLog.objects.filter(job=job).order_by("sequence").values_list("text", flat=True)
        )
        assert (job.jobstatus, job.transexitcode) == ("finished", 0), output
        assert f"read: {SECRET}" in output

    # A second task, killed by pbook before any pilot takes it.
    again = run_client([*prun[:-4], "--outDS", "user.bob.second", "--site", QUEUE, "--nJobs", "2"], env, work)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    other = Task.objects.exclude(pk=task.pk).get()

    out = python(clients_venv, PBOOK, env, work, str(task.pk), str(other.pk))

    assert out["status"] == [0, "done"]
    assert out["shown"] == [[task.pk, "done", 3], [other.pk, "ready", 0]]
    assert out["killed"] is True
    assert out["again"][1][0] is False  # a second kill: the task has ended
    assert out["other_status"] == [0, "aborted"]
    assert set(Job.objects.filter(task=other).values_list("jobstatus", flat=True)) == {"cancelled"}
