"""Real Celery processes for the interop tests: workers and beats on the real Redis broker, against
the test database, each started and stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a child process needs to use the test database and the test broker, plus
    `extra` (settings of the test)."""
    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), (
        f"the Celery interop tests need a Redis broker (scripts/test.sh sets one), got {broker!r}"
    )
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        CELERY_BROKER_URL=broker,
        DJANGO_SETTINGS_MODULE="config.settings",
        AILURO_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def broker_purge() -> None:
    """Drop messages left in our Redis database by an earlier, interrupted run."""
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")


def celery_start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-q", "-A", "config", *args],
            cwd=ROOT,
            env=child_environment(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def worker_start(name: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return celery_start(
        [
            "worker",
            "-n",
            f"{name}@%h",
            "-c",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        log,
        env,
    )


def beat_start(schedule: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return celery_start(["beat", "-s", str(schedule), "--loglevel", "INFO"], log, env)


def process_stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL of the process group the child leads."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(
    check: Callable[[], bool], *, what: str, timeout: float = 60, logs: list[Path] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs or [] if p.exists())
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")
