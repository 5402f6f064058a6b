from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ailuro_up_serves_monitor_and_admin_within_60_seconds_without_services(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env["AILURO_DATA_DIR"] = str(tmp_path)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailuro.cli", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        monitor = admin = None
        while time.monotonic() - started < 60 and (monitor is None or admin is None):
            try:
                with urllib.request.urlopen(base + "/", timeout=5) as r:
                    monitor = r.read().decode()
                with urllib.request.urlopen(base + "/admin/login/", timeout=5) as r:
                    admin = r.read().decode()
            except OSError:
                time.sleep(0.5)
        elapsed = time.monotonic() - started
        assert monitor is not None, f"not up after {elapsed:.0f} s"
        assert admin is not None, f"admin not up after {elapsed:.0f} s"
        assert elapsed < 60
        assert "demo-step1" in monitor
        assert "SLAC_Rubin_Himem" in monitor
        assert "Django administration" in admin or "Log in" in admin
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
    assert "stopped" in out
    assert proc.returncode == 0, out
