"""Pilots as Slurm batch jobs: sbatch / squeue / sacct -c / scancel through the command line.

The CLI works with any Slurm version a site runs and needs nothing compiled. Rules kept here:
* `sbatch --parsable`; text output parsed with `-P`/explicit formats, never whitespace columns;
* live state from `squeue -t all` (it keeps finished jobs for MinJobAge), final state and exit
  code from `sacct` — `sacct -c` (the jobcomp file) when the site runs no slurmdbd;
* a job missing from one poll is not failed: the provisioner decides when missing means lost;
* in sacct's output the last record of a job wins (a requeued job has several).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

from harvester.plugins.base import BatchState, PluginError, Submitted, WorkerSpec

# Slurm job states → worker states (squeue long names; sacct may add " by <uid>" to CANCELLED).
_STATE_MAP = {
    "PENDING": "submitted",
    "CONFIGURING": "submitted",
    "REQUEUED": "submitted",
    "REQUEUE_HOLD": "submitted",
    "REQUEUE_FED": "submitted",
    "RESV_DEL_HOLD": "submitted",
    "SPECIAL_EXIT": "failed",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "RESIZING": "running",
    "COMPLETED": "finished",
    "CANCELLED": "cancelled",
    "FAILED": "failed",
    "TIMEOUT": "failed",
    "NODE_FAIL": "failed",
    "PREEMPTED": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "OUT_OF_MEMORY": "failed",
    "REVOKED": "cancelled",
}
FINAL = frozenset({"finished", "failed", "cancelled"})


def slurm_state_to_worker(state: str) -> str:
    """Map a squeue/sacct state (`CANCELLED by 0`, `CANCELLED+`, `OUT_OF_ME+` too) to a worker
    status. Unknown states count as failed so nothing waits for ever on a state we never saw."""
    name = state.strip().split(" ")[0].rstrip("+").upper()
    if name in _STATE_MAP:
        return _STATE_MAP[name]
    matches = {v for k, v in _STATE_MAP.items() if name and k.startswith(name)}
    return matches.pop() if len(matches) == 1 else "failed"


def slurm_exit_code(text: str) -> int | None:
    """sacct's `code:signal` → one number: the code, or 128+signal when a signal ended it."""
    code, _, sig = text.strip().partition(":")
    if not code.isdigit():
        return None
    return 128 + int(sig) if sig.isdigit() and int(sig) and not int(code) else int(code)


def parse_squeue(output: str) -> dict[str, BatchState]:
    """`squeue -h -t all -o '%i|%T|%N|%r'` lines → states."""
    states: dict[str, BatchState] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        batch_id, state = parts[0], parts[1]
        node = parts[2] if len(parts) > 2 and parts[2] != "(null)" else ""
        reason = parts[3] if len(parts) > 3 and parts[3] != "None" else ""
        states[batch_id] = BatchState(status=slurm_state_to_worker(state), node=node, diag=reason)
    return states


def parse_sacct(output: str) -> dict[str, BatchState]:
    """`sacct -P -n -o JobID,State,ExitCode,NodeList` lines → states; steps (`12.batch`) skipped,
    the last record of a job wins."""
    states: dict[str, BatchState] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0] or "." in parts[0]:
            continue
        status = slurm_state_to_worker(parts[1])
        code = slurm_exit_code(parts[2])
        diag = "" if status == "finished" else f"slurm state {parts[1]} exit {parts[2]}"
        node = parts[3] if len(parts) > 3 and parts[3] not in {"None assigned", "(null)"} else ""
        states[parts[0]] = BatchState(status=status, exit_code=code, node=node, diag=diag)
    return states


def job_script(spec: WorkerSpec, params: dict[str, Any]) -> str:
    """The batch script of one pilot, from the queue's plugin_params (partition, account, qos,
    memory_mb, walltime_s, cores, extra sbatch options) and the worker's own needs."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=ailuro-{spec.queue}-{spec.worker_id}",
        f"#SBATCH --output={spec.workdir}/slurm-%j.out",
        f"#SBATCH --error={spec.workdir}/slurm-%j.err",
        f"#SBATCH --chdir={spec.workdir}",
        f"#SBATCH --cpus-per-task={int(params.get('cores') or spec.cores or 1)}",
        "#SBATCH --nodes=1",
    ]
    for key in ("partition", "account", "qos", "reservation", "constraint"):
        if params.get(key):
            lines.append(f"#SBATCH --{key}={params[key]}")
    memory = int(params.get("memory_mb") or spec.memory_mb or 0)
    if memory:
        lines.append(f"#SBATCH --mem={memory}M")
    walltime = int(params.get("walltime_s") or spec.walltime_s or 0)
    if walltime:
        lines.append(f"#SBATCH --time={max(1, (walltime + 59) // 60)}")
    # The pilot hears scancel/preemption as SIGTERM; ask Slurm to send it a little early too.
    lines.append("#SBATCH --signal=TERM@60")
    lines += [f"#SBATCH {opt}" for opt in params.get("sbatch_options", [])]
    for key, value in sorted(spec.env.items()):
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(f"export AILURO_WORKER_ID={spec.worker_id}")
    # exec: the pilot itself receives Slurm's signals (no shell in between to swallow them).
    lines.append("exec " + shlex.join(spec.argv))
    return "\n".join(lines) + "\n"


class SlurmPlugin:
    name = "slurm"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        # Sites with slurmdbd use plain sacct; without it, the jobcomp file through `sacct -c`.
        self.sacct_completion = bool(params.get("sacct_completion", True))
        self.timeout_s = float(params.get("command_timeout_s", 30))

    def _run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(  # noqa: S603  (fixed Slurm commands, list argv)
                list(argv), capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PluginError(f"{argv[0]}: {exc}") from exc
        if check and result.returncode != 0:
            raise PluginError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()[:300]}")
        return result

    def submit(self, spec: WorkerSpec) -> Submitted:
        spec.workdir.mkdir(parents=True, exist_ok=True)
        script = spec.workdir / "pilot.sbatch"
        script.write_text(job_script(spec, self.params))
        result = self._run(["sbatch", "--parsable", str(script)])
        batch_id = result.stdout.strip().split(";")[0]
        if not batch_id.isdigit():
            raise PluginError(f"sbatch printed no job id: {result.stdout.strip()[:200]!r}")
        return Submitted(
            batch_id=batch_id,
            stdout_path=str(spec.workdir / f"slurm-{batch_id}.out"),
            stderr_path=str(spec.workdir / f"slurm-{batch_id}.err"),
        )

    def poll(self, batch_ids: Iterable[str]) -> dict[str, BatchState]:
        ids = sorted(set(batch_ids))
        if not ids:
            return {}
        states: dict[str, BatchState] = {}
        for start in range(0, len(ids), 100):
            chunk = ",".join(ids[start : start + 100])
            queue = self._run(["squeue", "-h", "-t", "all", "-j", chunk, "-o", "%i|%T|%N|%r"], check=False)
            states.update(parse_squeue(queue.stdout) if queue.returncode == 0 else {})
            # Final state and exit code come from accounting; squeue knows no exit code.
            wanted = [i for i in ids[start : start + 100] if i not in states or states[i].status in FINAL]
            if wanted:
                argv = ["sacct", "-P", "-n", "-j", ",".join(wanted), "-o", "JobID,State,ExitCode,NodeList"]
                if self.sacct_completion:
                    argv.insert(1, "-c")
                acct = self._run(argv, check=False)
                if acct.returncode == 0:
                    for batch_id, state in parse_sacct(acct.stdout).items():
                        if batch_id in wanted:
                            states[batch_id] = state
        return states

    def cancel(self, batch_ids: Iterable[str]) -> None:
        ids = sorted(set(batch_ids))
        if ids:
            self._run(["scancel", *ids], check=False)
