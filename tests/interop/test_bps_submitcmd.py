"""`bps submitcmd`, the released CLI unmodified, end to end against ailuro (gunicorn + PostgreSQL).

1. bps tars the executable into a sandbox `jobO.<uuid>.tar.gz`, uploads it to
   `/api/v1/file_server/upload_cache_file` and submits a one-job workflow through the iDDS relay.
2. ailuro brokers the job onto the queue; `ailuro pilot` runs it on a "worker node" whose
   environment has ctrl_bps_panda installed (the clients venv on PATH, `CTRL_BPS_PANDA_DIR`), and
   nothing else pointing at the server: the pilot provides `PANDACACHE_URL`.
3. The job's command is ctrl_bps_panda's `edgenode/cmd_line_decoder.py`: it downloads the sandbox
   from the server's root `/cache/<name>`, extracts it and runs the executable, which exists only
   in the sandbox by then (the test deletes the user's copy after the submission).

And the failure mode upstream never stops: an upload the server refuses makes `bps submitcmd`
retry forever without a pause (reference §8.1); the server answers 429 after the per-user rate.
Every client runs under `timeout`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.services import token_create
from dispatcher.models import Job, PayloadLog, Workflow
from dispatcher.services import broker_one_batch
from pandacompat.models import CacheFile
from tests.ailuro.server import ROOT, AiluroServer, pilot_argv, pilot_token_file
from tests.factories import QueueFactory, SiteFactory
from tests.interop.conftest import client_env, run_client

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SITE = "SLAC_Rubin"
RUNNER = "python3 ${CTRL_BPS_PANDA_DIR}/python/lsst/ctrl/bps/panda/edgenode/cmd_line_decoder.py _cmd_line_"


def server_started(tmp_path: Path, **env: str) -> AiluroServer:
    server = AiluroServer(tmp_path, {"AILURO_PANDA_CACHE_DIR": str(tmp_path / "panda-cache"), **env})
    server.start()
    return server


def refusals_logged(tmp_path: Path, path: str) -> list[int]:
    """Status codes of the 4xx/5xx answers to `path` in the server's log: Django logs every such
    response (logger django.request, WARNING and up), one JSON object per line."""
    statuses = []
    for line in (tmp_path / "server.log").read_text().splitlines():
        record = json.loads(line)
        if record.get("logger") == "django.request" and f"'{path}'" in str(record.get("request")):
            statuses.append(int(record["status_code"]))
    return statuses


def submitcmd_config(work: Path, executable: str, arguments: str) -> Path:
    """A `bps submitcmd` configuration as in the captured run (submitcmd.yaml), paths under `work`."""
    config = work / "submitcmd.yaml"
    config.write_text(
        f"""\
wmsServiceClass: lsst.ctrl.bps.panda.PanDAService
computeSite: {SITE}
computeCloud: US
operator: alice
project: dev
campaign: wire
payloadName: hello
submitPath: {work}/submit/{{uniqProcName}}
fileDistributionEndPoint: "file://{work}/dist/"
fileDistributionEndPointDefault: "file://{work}/dist/"
runnerCommand: "{RUNNER}"
customJob:
  executable: {executable}
  arguments: "{arguments}"
  requestMemory: 1500
  requestWalltime: 600
  processingType: ""
"""
    )
    return config


def worker_environment(venv: Path, tmp_path: Path) -> dict[str, str]:
    """A worker node with ctrl_bps_panda installed and nothing that points at a PanDA server.

    `CTRL_BPS_PANDA_DIR` is the package's root as an LSST stack (eups) sets it, with `python/`
    holding the `lsst` tree; for a pip installation that is a folder whose `python` is the
    site-packages directory.
    """
    root = tmp_path / "ctrl_bps_panda"
    root.mkdir()
    (root / "python").symlink_to(next((venv / "lib").glob("python3*/site-packages")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PANDA", "DATABASE_URL"))}
    env.update(
        {
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
            "CTRL_BPS_PANDA_DIR": str(root),
            "HOME": str(tmp_path / "worker-home"),
        }
    )
    return env


def test_bps_submitcmd_job_runs_the_executable_from_the_uploaded_sandbox(
    clients_venv: Path, tmp_path: Path
) -> None:
    site = SiteFactory(name=SITE)
    queue = QueueFactory(name=SITE, site=site, max_rss_mb=16000, max_cores=4, max_walltime_s=100_000)
    server = server_started(tmp_path)
    try:
        work = tmp_path / "user"
        work.mkdir()
        ran = tmp_path / "ran.txt"
        hello = work / "hello.sh"
        hello.write_text(
            f'#!/bin/sh\necho "hello from the sandbox: $*"\nprintf "%s\\n" "$*" "$PANDAID" "$(pwd)" > {ran}\n'
        )
        hello.chmod(0o755)
        token = token_create(username="alice")
        env = client_env(clients_venv, server, token, tmp_path / "home")
        submitted = run_client(
            [
                str(clients_venv / "bin" / "bps"),
                "submitcmd",
                str(submitcmd_config(work, "hello.sh", "one two")),
            ],
            env,
            work,
        )
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]

        workflow = Workflow.objects.get()
        assert workflow.owner.username == "alice"
        [job] = Job.objects.filter(workflow=workflow)
        [sandbox] = CacheFile.objects.all()
        assert re.fullmatch(r"jobO\.[0-9a-f-]{36}\.tar\.gz", sandbox.name)
        assert sandbox.owner.username == "alice"
        # The command is the site's runnerCommand with the sandbox's URL in it, as BPS built it.
        assert "cmd_line_decoder.py" in job.command
        assert f"{server.url}/server/panda/cache/{sandbox.name}" in job.command
        assert "${IN/L}" not in job.command
        # requestWalltime is PanDA's maxWalltime, in seconds: unset, BPS asks for 90,000 s, which
        # no pilot with the default 24 h lifetime would take.
        assert (job.request_memory_mb, job.request_walltime_s) == (1500, 600)
        hello.unlink()  # from here on, only the uploaded sandbox has the executable

        assert broker_one_batch() == 1
        assert Job.objects.get(pk=job.pk).queue_id == queue.name
        pilot = subprocess.run(
            pilot_argv(
                server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot", "--keep-workdirs"
            ),
            cwd=ROOT,
            env=worker_environment(clients_venv, tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert pilot.returncode == 0, pilot.stderr[-3000:]

        job.refresh_from_db()
        output = "".join(
            PayloadLog.objects.filter(job=job).order_by("sequence").values_list("text", flat=True)
        )
        assert (job.jobstatus, job.transexitcode) == ("finished", 0), output[-3000:] + pilot.stderr[-3000:]
        assert "hello from the sandbox: one two" in output
        # The user reads it where `ailuro logs <pandaid>` does.
        request = urllib.request.Request(
            f"{server.url}/api/v1/jobs/{job.pandaid}/log/", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert "hello from the sandbox: one two" in json.loads(answer.read())["text"]
        arguments, pandaid, workdir = ran.read_text().splitlines()
        assert (arguments, pandaid) == ("one two", str(job.pandaid))
        # It ran in the job's folder, where the decoder had extracted the sandbox.
        assert Path(workdir) == tmp_path / "pilot" / f"job-{job.pandaid}-1"
        assert (Path(workdir) / "hello.sh").read_text().startswith("#!/bin/sh\n")
        # The decoder's own log: it fetched the sandbox from the root /cache/ path of this server.
        assert f'GET {server.url}/cache/{sandbox.name} "HTTP/1.1 200 OK"' in output
        assert "Download archive file from pandacache status: 0" in output
    finally:
        server.stop()


def test_bps_submitcmd_looping_on_a_refused_upload_is_answered_429(
    clients_venv: Path, tmp_path: Path
) -> None:
    """The user's cache quota is smaller than the sandbox: every upload is refused (413), and
    ctrl_bps_panda's copy_files_to_pandacache retries at once, forever. The server does the quota
    check at most `rate` times per window and answers every other upload 429 with Retry-After."""
    server = server_started(tmp_path, AILURO_PANDA_CACHE_QUOTA="1024", AILURO_RATE_CACHE_UPLOAD="5/hour")
    try:
        work = tmp_path / "user"
        work.mkdir()
        hello = work / "hello.sh"
        # Random text does not compress: the sandbox is larger than the 1 KiB quota.
        hello.write_text("#!/bin/sh\n# " + os.urandom(3000).hex() + "\necho hello\n")
        token = token_create(username="alice")
        env = client_env(clients_venv, server, token, tmp_path / "home")
        looped = subprocess.run(
            [
                "timeout",
                "15",
                str(clients_venv / "bin" / "bps"),
                "submitcmd",
                str(submitcmd_config(work, "hello.sh", "")),
            ],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        # What every looping call got back: 429 and how long to wait, in panda-client's envelope.
        probe = urllib.request.Request(
            f"{server.url}/api/v1/file_server/upload_cache_file",
            data=b"",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=x"},
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(probe, timeout=10)
        assert answer.value.code == 429
        assert 1 <= int(answer.value.headers["Retry-After"]) <= 3600
        assert json.loads(answer.value.read())["success"] is False
    finally:
        server.stop()  # then the server's log has every answer it gave
    assert looped.returncode == 124, looped.stdout[-2000:] + looped.stderr[-2000:]  # still looping
    # panda-client prints each answer: the user sees why (the quota), then the 429s.
    assert "your cache quota of 1024 bytes would be exceeded" in looped.stdout
    assert "too many uploads; retry later" in looped.stdout
    uploads = refusals_logged(tmp_path, "/api/v1/file_server/upload_cache_file")
    assert uploads.pop(uploads.index(429)) == 429  # the probe's (any one 429 stands for it)
    refused, limited = uploads.count(413), uploads.count(429)
    assert refused + limited == len(uploads), sorted(set(uploads))
    # The quota check (a transaction and a file write) ran 5 times per hour-long window; 15 s may
    # straddle two windows. Every other upload cost an authentication and a cache increment.
    assert 5 <= refused <= 10
    assert limited > refused, f"only {len(uploads)} uploads in 15 s"
    assert not CacheFile.objects.exists()
    assert not Workflow.objects.exists()
    print(
        f"{len(uploads)} uploads in 15 s: {refused} refused (413), {limited} rate-limited (429)",
        file=sys.stderr,
    )
