"""The pilot's job loop: acquire a job, run it, report it, repeat (v1 protocol, no Django).

Wire names are PanDA's new API (`shared/reference/pilot-protocol.md` §3.2, §5.3); every update also
echoes the dispatch's `lease`, which the server checks with the pandaid and attempt number.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ailuro.pilot.client import Retry, Server, ServerRefused, ServerUnavailable, Spool
from ailuro.pilot.monitor import Sample
from ailuro.pilot.runner import Limits, PayloadResult, run_payload
from ailuro.protocol import COMMAND_KILL

log = logging.getLogger("ailuro.pilot")

PILOT_VERSION = "ailuro-pilot 1"


@dataclass(frozen=True)
class PilotConfig:
    url: str
    queue: str
    token: str | None = None
    lifetime_s: float = 24 * 3600
    max_jobs: int = 0  # 0: no limit
    heartbeat_s: float = 60.0
    workdir: Path = Path("ailuro-pilot")
    spool: Path | None = None  # default: <workdir>/spool
    idle_wait_s: float = 0.0  # keep asking this long for work before exiting
    keep_workdirs: bool = False
    node: str = field(default_factory=socket.gethostname)
    batch_id: str = field(default_factory=lambda: os.environ.get("SLURM_JOB_ID", ""))
    worker_id: str = field(
        default_factory=lambda: os.environ.get("AILURO_WORKER_ID", os.environ.get("HARVESTER_WORKER_ID", ""))
    )
    sample_s: float = 0.5
    retry: Retry = field(default_factory=Retry)


@dataclass(frozen=True)
class JobSpec:
    """The parts of a dispatched job description the pilot uses (PanDA field names)."""

    pandaid: int
    attemptnr: int
    lease: str
    command: str
    memory_mb: int
    walltime_s: int
    cores: int
    image: str
    taskid: int | None
    environment: dict[str, str]

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> JobSpec:
        env = doc.get("environment") or {}
        if not isinstance(env, dict):
            env = {}
        taskid = doc.get("taskID") or doc.get("jediTaskID")
        return cls(
            pandaid=int(doc["PandaID"]),
            attemptnr=int(doc.get("attemptNr") or 1),
            lease=str(doc.get("lease") or ""),
            # ailuro servers send the plain command; PanDA-style ones only jobPars (wrapper args).
            command=str(doc.get("command") or doc.get("jobPars") or ""),
            memory_mb=int(float(doc.get("minRamCount") or 0)),
            walltime_s=int(float(doc.get("maxWalltime") or 0)),
            cores=int(doc.get("coreCount") or 1),
            image=str(doc.get("container_name") or ""),
            taskid=int(taskid) if taskid else None,
            environment={str(k): str(v) for k, v in env.items()},
        )


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _node_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


class Pilot:
    def __init__(self, config: PilotConfig) -> None:
        self.config = config
        self.server = Server(config.url, token=config.token, retry=config.retry)
        # Output chunks go from the reader thread: a connection of their own.
        self.log_server = Server(config.url, token=config.token, retry=Retry(attempts=3, base_s=0.2))
        self.spool = Spool(config.spool or config.workdir / "spool")
        self.stopping = False
        self.jobs_done = 0
        self.timings: list[dict[str, float]] = []

    # ------------------------------------------------------------------ signals
    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: stopping after the current job is reported (preempted)", signum)
        self.stopping = True

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """Run jobs until there is no work, the lifetime or job count is used up, or SIGTERM."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        deadline = time.monotonic() + self.config.lifetime_s
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        self._flush_spool()
        idle_since: float | None = None
        while not self.stopping and time.monotonic() < deadline:
            if self.config.max_jobs and self.jobs_done >= self.config.max_jobs:
                log.info("max jobs (%d) reached", self.config.max_jobs)
                break
            acquired_at = time.monotonic()
            try:
                job = self._acquire(deadline - time.monotonic())
            except ServerUnavailable as exc:
                log.error("cannot acquire a job: %s", exc)
                return 2
            except ServerRefused as exc:
                log.error("server refused the pilot: %s", exc)
                return 3
            if job is None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self.config.idle_wait_s:
                    log.info("no work for queue %s; exiting", self.config.queue)
                    break
                time.sleep(min(2.0, self.config.idle_wait_s))
                continue
            idle_since = None
            self._run_job(job, acquired_at)
            self.jobs_done += 1
            self._flush_spool()
        self.server.close()
        self.log_server.close()
        return 0

    def _flush_spool(self) -> None:
        if self.spool.pending():
            sent = self.spool.flush(self.server)
            if sent:
                log.info("delivered %d spooled report(s)", sent)

    def _acquire(self, remaining_s: float) -> JobSpec | None:
        reply = self.server.post(
            "acquire_jobs",
            {
                "site_name": self.config.queue,
                "computing_element": self.config.queue,
                "n_jobs": 1,
                "node": self.config.node,
                "memory": _node_memory_mb(),
                "disk_space": shutil.disk_usage(self.config.workdir).free // 2**20,
                "remaining_time": int(max(0, remaining_s)),
                "worker_id": self.config.worker_id,
                "batch_id": self.config.batch_id,
            },
        )
        data = reply.data if isinstance(reply.data, dict) else {}
        jobs = data.get("jobs") or []
        if not reply.success or not jobs:
            log.info("no job: %s", reply.message or "empty reply")
            return None
        return JobSpec.from_wire(jobs[0])

    def _base_update(self, job: JobSpec, status: str) -> dict[str, Any]:
        return {
            "job_id": job.pandaid,
            "attempt_nr": job.attemptnr,
            "lease": job.lease,
            "job_status": status,
            "site_name": self.config.queue,
            "node": self.config.node,
            "batch_id": self.config.batch_id,
            "pilot_id": f"{self.config.worker_id or os.getpid()}|{PILOT_VERSION}",
            "core_count": job.cores,
        }

    def _run_job(self, job: JobSpec, acquired_at: float) -> None:
        workdir = self.config.workdir / f"job-{job.pandaid}-{job.attemptnr}"
        env = dict(os.environ)
        env.update(job.environment)
        env.update({"PANDAID": str(job.pandaid), "AILURO_ATTEMPT": str(job.attemptnr)})
        if job.taskid:
            env["PanDA_TaskID"] = str(job.taskid)

        def heartbeat(sample: Sample, wall_s: float) -> bool:
            update = self._base_update(job, "running")
            update.update(
                {
                    "max_rss": sample.rss_kb,
                    "max_pss": sample.pss_kb,
                    "cpu_consumption_time": round(sample.cpu_s, 2),
                    "start_time": _utc(time.time() - wall_s),
                }
            )
            try:
                reply = self.server.post("update_job", update, retry=Retry(attempts=2, base_s=0.5))
            except ServerUnavailable as exc:
                log.warning("heartbeat for %d not delivered: %s", job.pandaid, exc)
                return False
            except ServerRefused as exc:
                # The server no longer knows this dispatch (stale attempt or lease): stop working on it.
                log.warning("heartbeat for %d refused (%s): killing the payload", job.pandaid, exc)
                return True
            if _wants_kill(reply.data):
                log.warning("server says %s for job %d: killing the payload", COMMAND_KILL, job.pandaid)
                return True
            return False

        def log_sink(sequence: int, text: str) -> None:
            payload = {
                "job_id": job.pandaid,
                "attempt_nr": job.attemptnr,
                "lease": job.lease,
                "sequence": sequence,
                "text": text,
            }
            try:
                self.log_server.post("append_log", payload)
            except (ServerUnavailable, ServerRefused) as exc:
                # Output is best effort on the wire; the full copy stays in the work dir.
                log.warning("log chunk %d of %d not stored: %s", sequence, job.pandaid, exc)

        result = run_payload(
            job.command,
            workdir=workdir,
            env=env,
            limits=Limits(
                memory_kb=job.memory_mb * 1024 if job.memory_mb else None,
                walltime_s=float(job.walltime_s) if job.walltime_s else None,
            ),
            image=job.image,
            heartbeat=heartbeat,
            heartbeat_s=self.config.heartbeat_s,
            log_sink=log_sink,
            sample_s=self.config.sample_s,
            preempted=lambda: self.stopping,
            first_heartbeat_at_start=True,
        )
        accepted = self._final_update(job, result)
        timing = {
            "pandaid": float(job.pandaid),
            "acquire_to_start_s": result.started_mono - acquired_at,
            "end_to_report_s": time.monotonic() - result.exited_mono,
        }
        self.timings.append(timing)
        log.info("job %d done: %s", job.pandaid, json.dumps(timing))
        if (
            accepted
            and result.pilot_error_code == 0
            and result.exit_code == 0
            and not self.config.keep_workdirs
        ):
            shutil.rmtree(workdir, ignore_errors=True)

    def _final_update(self, job: JobSpec, result: PayloadResult) -> bool:
        ok = result.pilot_error_code == 0 and result.exit_code == 0
        update = self._base_update(job, "finished" if ok else "failed")
        update.update(
            {
                "start_time": _utc(result.started_at),
                "end_time": _utc(result.ended_at),
                "max_rss": result.max_rss_kb,
                "max_pss": result.max_pss_kb,
                "cpu_consumption_time": result.cpu_s,
                "cpu_consumption_unit": "s",
                "trans_exit_code": result.exit_code if result.exit_code is not None else 0,
                "exe_error_code": 0,
                "exe_error_diag": "",
                "pilot_error_code": result.pilot_error_code,
                "pilot_error_diag": result.pilot_error_diag[:500],
                "pilot_timing": f"0|0|{result.wall_s:.0f}|0|0|0",
                "job_metrics": f"coreCount={job.cores} logBytes={result.log_bytes} logChunks={result.log_chunks}",
            }
        )
        try:
            self.server.post("update_job", update)
        except ServerUnavailable as exc:
            path = self.spool.put("update_job", update)
            log.error("final report of %d not delivered (%s); spooled to %s", job.pandaid, exc, path)
            return False
        except ServerRefused as exc:
            log.error("final report of %d refused: %s", job.pandaid, exc)
            return False
        return True


def _wants_kill(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    command = str(data.get("command") or "")
    return COMMAND_KILL in {part.strip() for part in command.split(",")}
