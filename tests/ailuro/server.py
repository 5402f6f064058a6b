"""Test helpers: the real ailuro server (gunicorn) on the test database, and pilots against it.

Tests using these need `transactional_db`: the server is another process and only sees committed
rows. Every process started here is stopped by pid (its own process group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from core.services import token_create
from dispatcher.models import Job, Queue
from dispatcher.services import NewJob, job_transition, workflow_submit
from tests.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class AiluroServer:
    """gunicorn serving config.wsgi on 127.0.0.1:<port>, restartable on the same port."""

    def __init__(
        self, tmp: Path, env: dict[str, str] | None = None, *, workers: int = 1, threads: int = 8
    ) -> None:
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    # A GET of a path every server of ailuro answers once it is up (405 from gunicorn, 404 from
    # the pilot lane: any HTTP answer will do).
    READY_PATH = "/api/v1/pilot/append_log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "2",
        ]

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "AILURO_DATA_DIR": str(self.tmp / "server-data"),
            "AILURO_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return env

    def start(self) -> None:
        log = (self.tmp / "server.log").open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                urllib.request.urlopen(self.url + self.READY_PATH, timeout=2)
            except urllib.error.HTTPError:
                pass  # an HTTP answer of any status: it is up
            except OSError:
                time.sleep(0.1)
                continue
            return
        raise AssertionError(f"{type(self).__name__} did not come up in 30 s")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for an assertion's message: a failure shows the traceback."""
        path = self.tmp / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no server log)"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=10)
        self.proc = None


def pilot_token_file(tmp: Path, queues: Sequence[str] = ()) -> Path:
    path = tmp / "pilot-token"
    path.write_text(token_create(username="pilots", role="pilot", queues=list(queues)))
    return path


def pilot_argv(url: str, queue: str, token_file: Path, workdir: Path, *extra: str) -> list[str]:
    """`ailuro pilot` for a test: its spool is `<workdir's parent>/spool` (shared by the pilots of
    one test, as by the pilots of one node), never the node's default."""
    return [
        sys.executable,
        "-m",
        "ailuro.cli",
        "pilot",
        "--url",
        url,
        "--queue",
        queue,
        "--token-file",
        str(token_file),
        "--workdir",
        str(workdir),
        "--heartbeat",
        "1",
        "--spool",
        str(workdir.parent / "spool"),
        *extra,
    ]


@contextlib.contextmanager
def pilot_process(
    url: str, queue: str, token_file: Path, workdir: Path, *extra: str
) -> Iterator[subprocess.Popen[str]]:
    """A running `ailuro pilot` (stderr piped, text), killed with its group if still alive at the end."""
    proc = subprocess.Popen(
        pilot_argv(url, queue, token_file, workdir, *extra),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def run_pilot(url: str, queue: str, token_file: Path, workdir: Path, *extra: str, timeout: float = 60) -> Any:
    return subprocess.run(
        pilot_argv(url, queue, token_file, workdir, *extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def activated_jobs(queue: Queue, jobs: Sequence[NewJob], name: str = "wf") -> list[Job]:
    """Submit `jobs` as one workflow and activate them on `queue` (standing in for brokerage)."""
    owner, _ = get_user_model().objects.get_or_create(username="alice")
    workflow = workflow_submit(owner=owner, name=name, jobs=jobs)
    rows = list(Job.objects.filter(workflow=workflow).order_by("pandaid"))
    for job in rows:
        job_transition(pandaid=job.pandaid, to="activated", cause="test", fields={"queue_id": queue.name})
    return list(Job.objects.filter(workflow=workflow).order_by("pandaid"))


PILOT_UNIT = ROOT / "deploy" / "systemd" / "ailuro-pilot.service"


def pilot_lane_argv(port: int) -> list[str]:
    """The pilot lane's command of deploy/systemd/ailuro-pilot.service, on `port` and this
    interpreter: the test serves what is deployed."""
    [line] = [line for line in PILOT_UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    executable, *args = line.removeprefix("ExecStart=").split()
    assert executable == "/opt/ailuro/venv/bin/granian", executable
    args[args.index("--port") + 1] = str(port)
    return [sys.executable, "-m", "granian", *args]


def pilot_lane_env() -> dict[str, str]:
    """The unit's own Environment= settings (AILURO_WEB_ROLE and the metrics directory)."""
    env = {}
    for line in PILOT_UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for item in line.removeprefix("Environment=").split():
                name, _, value = item.partition("=")
                env[name] = value
    return env


class PilotLaneServer(AiluroServer):
    """granian serving the pilot lane as deploy/systemd/ailuro-pilot.service does, beside an
    AiluroServer; `env` overrides the unit's settings (PROMETHEUS_MULTIPROC_DIR, say)."""

    def command(self) -> list[str]:
        return pilot_lane_argv(self.port)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **pilot_lane_env(), **self.extra_env}
