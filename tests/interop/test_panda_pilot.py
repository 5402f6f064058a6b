"""The real PanDA pilot (PyPI panda-pilot 3.7.0.36) against a live ailuro server.

gunicorn serves ailuro on a free loopback port over the test database (PostgreSQL); three pilots
run in parallel, one per queue, in token mode with an ailuro pilot token, each configured from
ailuro alone (queuedata, storage data, the pilot config's URLs all point at the server):

* a `bash -c` payload that runs ~25 s: heartbeats, then `finished`;
* an `exit 3` payload: `failed`, transExitCode 3 and pilotErrorCode 1305 (3.7.0.36's mapping);
* a long payload an operator cancels while it runs: the next heartbeat answers `tobekilled`, the
  pilot kills the payload and ends.

SAFETY: the pilot kills every orphan of its user at the end of a job. It
runs here only with PILOT_NOKILL=1 AND inside `unshare --pid --fork --mount-proc`, under
`timeout`, and every process this test starts is stopped by its own pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from core.services import token_create
from dispatcher.models import Job, JobAttempt, JobStatusLog
from dispatcher.protocol.queuedata import RUNPAYLOAD
from dispatcher.services import job_transition
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory
from tests.processes import stop_process_group
from tests.workers import install_lock

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
PILOT_VERSION = "3.7.0.36"
# 3.7.0.36 only downloads transformations from hard-coded base URLs; with HARVESTER_WORKDIR it
# copies the script from there instead and never contacts this URL.
TRF_BASE = "http://pandaserver-doma.cern.ch:25080/trf/user"
HEARTBEAT_S = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pilot_source() -> Path:
    """The unpacked sdist (cached under var/interop): `pip install` would not give pilot.py."""
    target = ROOT / "var" / "interop" / f"panda-pilot-{PILOT_VERSION}"
    with install_lock("panda-pilot"):
        if not (target / "pilot.py").exists():
            _pilot_unpack(target)
    return target


def _pilot_unpack(target: Path) -> None:
    download = ROOT / "var" / "interop" / "dl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"panda-pilot=={PILOT_VERSION}",
            "-d",
            str(download),
        ],
        check=True,
        timeout=300,
    )
    with tarfile.open(download / f"panda-pilot-{PILOT_VERSION}.tar.gz") as archive:
        archive.extractall(target.parent, filter="data")
    assert (target / "pilot.py").exists()


def _database_url() -> str:
    s = connection.settings_dict
    return (
        f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    )


@pytest.fixture
def server(tmp_path: Path, postgres_only: None) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "AILURO_DATA_DIR": str(tmp_path / "server"),
        "AILURO_PILOT_AUTH": "token",
        "AILURO_PILOT_TRF_BASE_URL": TRF_BASE,
        "AILURO_PILOT_SE_PATH": str(tmp_path / "se") + "/",
        "AILURO_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "8",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/trf/user/runpayload.sh", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "gunicorn did not come up"
                time.sleep(0.3)
        yield base
    finally:
        stop_process_group(proc)
        log.close()


def _pilot_config(source: Path, workdir: Path, base: str) -> Path:
    """The pilot's own default.cfg with every URL pointing at ailuro and a short heartbeat."""
    text = (source / "pilot" / "util" / "default.cfg").read_text()
    text = re.sub(r"https?://[^/\s;,]+", base, text)  # scheme and host; the paths stay
    text = re.sub(r"(?m)^heartbeat:\s*\d+", f"heartbeat: {HEARTBEAT_S}", text)
    path = workdir / "pilot_local.cfg"
    path.write_text(text)
    return path


def _start_pilot(source: Path, workdir: Path, base: str, queue: str, token: str) -> subprocess.Popen[bytes]:
    for sub in ("work", "se", "tok", "trf", "certs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "tok" / "token").write_text(token)  # no trailing newline, as the pilot's token file has
    script = workdir / "trf" / "runpayload.sh"
    script.write_text(RUNPAYLOAD)
    script.chmod(0o755)
    port = base.rsplit(":", 1)[1]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PILOT_NOKILL": "1",  # never remove: see the module docstring
        "HARVESTER_PILOT_CONFIG": str(_pilot_config(source, workdir, base)),
        "HARVESTER_WORKDIR": str(workdir / "trf"),
        "PANDA_AUTH_TOKEN": "token",
        "PANDA_AUTH_ORIGIN": "ailuro.pilot",
        "PANDA_AUTH_DIR": str(workdir / "tok") + "/",
        "X509_CERT_DIR": str(workdir / "certs"),
    }
    command = [
        "timeout",
        "300",
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        sys.executable,
        str(source / "pilot.py"),
        "-q",
        queue,
        "--pilot-user",
        "generic",
        "-w",
        "generic",
        "--url",
        "http://127.0.0.1",
        "-p",
        port,
        "--queuedata-url",
        f"{base}/cache/schedconfig/{queue}.all.json",
        "--storagedata-url",
        f"{base}/cache/ddmendpoints.json",
        "-t",
        "-d",
        "-j",
        "managed",
        "-x",
        "1",
        "-v",
        "1",
        "-a",
        str(workdir / "work"),
        "--output-dir",
        str(workdir / "se"),
    ]
    out = (workdir / "pilot.out").open("wb")
    return subprocess.Popen(
        command, cwd=workdir / "work", env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _pilot_logs(workdir: Path) -> str:
    parts = [(workdir / "pilot.out").read_text(errors="replace")]
    parts += [p.read_text(errors="replace") for p in workdir.rglob("pilotlog.txt")]
    return "\n".join(parts)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare (root)")
def test_the_real_panda_pilot_runs_finishes_fails_and_is_killed(server: str, tmp_path: Path) -> None:
    source = _pilot_source()
    site = SiteFactory(name="INTEROP_SITE")
    names = {"ok": "INTEROP_OK", "fail": "INTEROP_FAIL", "kill": "INTEROP_KILL"}
    for name in names.values():
        # The real pilot does not echo the lease: its queues fence on the attempt number alone.
        QueueFactory(
            name=name,
            site=site,
            max_rss_mb=64000,
            max_disk_mb=10**6,
            pilot_flavour="panda",
            require_lease=False,
        )
    token = token_create(username="interop-pilots", role="pilot", queues=list(names.values()))
    task = TaskFactory()
    commands = {
        "ok": "echo hello from ailuro; sleep 25; echo done",
        "fail": "echo about to fail; exit 3",
        "kill": "echo waiting to be killed; sleep 280",
    }
    jobs = {
        key: JobFactory(task=task, jobstatus="activated", queue_id=names[key], command=commands[key])
        for key in names
    }
    pilots = {key: _start_pilot(source, tmp_path / key, server, names[key], token) for key in names}
    try:
        kill = jobs["kill"]
        deadline = time.monotonic() + 150
        while Job.objects.get(pk=kill.pk).jobstatus != "running":
            assert time.monotonic() < deadline, _pilot_logs(tmp_path / "kill")[-3000:]
            assert pilots["kill"].poll() is None, _pilot_logs(tmp_path / "kill")[-3000:]
            time.sleep(0.5)
        job_transition(pandaid=kill.pk, to="cancelled", cause="operator kill")
        for key, proc in pilots.items():
            try:
                proc.wait(timeout=280)
            except subprocess.TimeoutExpired:
                pytest.fail(f"pilot {key} did not end:\n{_pilot_logs(tmp_path / key)[-3000:]}")
    finally:
        for proc in pilots.values():
            _stop(proc)

    ok = Job.objects.get(pk=jobs["ok"].pk)
    ok_log = _pilot_logs(tmp_path / "ok")
    assert ok.jobstatus == "finished", ok_log[-3000:]
    history = list(JobStatusLog.objects.filter(job_id=ok.pk).values_list("jobstatus", flat=True))
    assert history == ["sent", "starting", "running", "finished"]
    attempt = JobAttempt.objects.get(job_id=ok.pk)
    assert (attempt.jobstatus, attempt.transexitcode, attempt.piloterrorcode) == ("finished", 0, 0)
    assert ok.pilot_id.endswith(PILOT_VERSION) and ok.node
    # A periodic heartbeat arrived while the payload slept (not only the state changes).
    assert ok.starttime is not None and ok.heartbeat_at is not None
    assert (ok.heartbeat_at - ok.starttime).total_seconds() >= HEARTBEAT_S - 1
    assert "hello from ailuro" in ok_log or "runpayload.sh" in ok_log

    failed = JobAttempt.objects.get(job_id=jobs["fail"].pk)
    fail_log = _pilot_logs(tmp_path / "fail")
    assert (failed.jobstatus, failed.transexitcode, failed.piloterrorcode) == ("failed", 3, 1305), fail_log[
        -3000:
    ]
    assert Job.objects.get(pk=jobs["fail"].pk).jobstatus in ("failed", "defined")

    killed = Job.objects.get(pk=jobs["kill"].pk)
    kill_log = _pilot_logs(tmp_path / "kill")
    assert killed.jobstatus == "cancelled"
    assert not JobAttempt.objects.filter(job_id=killed.pk).exists()
    assert "tobekilled" in kill_log, kill_log[-3000:]
