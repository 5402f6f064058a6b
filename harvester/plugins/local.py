"""Pilots as local subprocesses: the embedded run's plugin, and a single-node site's.

Each pilot runs under `/bin/sh` that writes the pilot's exit code to `exit_code` in the worker's
folder, so the state survives a provisioner restart. The batch id is `<pid>:<kernel start time>`
so a reused pid is never mistaken for the pilot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harvester.plugins.base import BatchState, PluginError, Submitted, WorkerSpec

# Popen objects of pilots this process started, so they are reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

_WRAPPER = 'cd "$AILURO_WORKER_DIR" && "$@"; echo $? > "$AILURO_WORKER_DIR/exit_code.tmp" && mv "$AILURO_WORKER_DIR/exit_code.tmp" "$AILURO_WORKER_DIR/exit_code"'


def _starttime(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


class LocalPlugin:
    name = "local"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def submit(self, spec: WorkerSpec) -> Submitted:
        out, err = spec.workdir / "pilot.out", spec.workdir / "pilot.err"
        env = {**os.environ, **spec.env, "AILURO_WORKER_DIR": str(spec.workdir)}
        try:
            spec.workdir.mkdir(parents=True, exist_ok=True)
            with out.open("ab") as stdout, err.open("ab") as stderr:
                proc = subprocess.Popen(  # noqa: S603  (our own pilot command line)
                    ["/bin/sh", "-c", _WRAPPER, "ailuro-worker", *spec.argv],
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise PluginError(f"cannot start the pilot: {exc}") from exc
        _CHILDREN[proc.pid] = proc
        (spec.workdir / "batch_id").write_text(str(proc.pid))
        return Submitted(
            batch_id=f"{proc.pid}:{_starttime(proc.pid) or '0'}",
            stdout_path=str(out),
            stderr_path=str(err),
        )

    def poll(self, batch_ids: Iterable[str]) -> dict[str, BatchState]:
        """Alive → running; exit code file → finished (0) or failed; gone without one → unknown.

        The exit file is found through `workdirs` (batch id → worker folder) given in params by the
        provisioner, since a dead process has no /proc entry to ask."""
        for pid, proc in list(_CHILDREN.items()):
            if proc.poll() is not None:
                del _CHILDREN[pid]
        folders: dict[str, str] = self.params.get("workdirs", {})
        states: dict[str, BatchState] = {}
        for batch_id in batch_ids:
            pid_text, _, start = batch_id.partition(":")
            pid = int(pid_text)
            folder = folders.get(batch_id)
            exit_file = Path(folder) / "exit_code" if folder else None
            if exit_file is not None and exit_file.exists():
                code = int(exit_file.read_text().strip() or 1)
                states[batch_id] = BatchState(
                    status="finished" if code == 0 else "failed",
                    exit_code=code,
                    node=os.uname().nodename,
                    diag="" if code == 0 else f"pilot exited with {code}",
                )
            elif _starttime(pid) == start:
                states[batch_id] = BatchState(status="running", node=os.uname().nodename)
        return states

    def cancel(self, batch_ids: Iterable[str]) -> None:
        for batch_id in batch_ids:
            pid_text, _, start = batch_id.partition(":")
            pid = int(pid_text)
            if _starttime(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
