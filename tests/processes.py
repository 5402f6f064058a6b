"""Child processes of the tests: each leads its own process group (start_new_session=True)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def stop_process_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send `sig` to the group `proc` leads, wait up to `timeout` s, then SIGKILL the group."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
