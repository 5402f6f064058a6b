"""The pilot's job loop: acquire a job, run it, report it, repeat (v1 protocol, no Django).

Wire names are PanDA's new API (docs/site-admin/pilots.md); every update also echoes the
dispatch's `lease`, which the server checks with the pandaid and attempt number.

Outages: every call that matters (acquire, the final report) is retried with backoff for the
policy's horizon (`Retry.horizon_s`, 3 h by default: longer than the server's heartbeat timeout),
and every final report is written to the node's spool before it is sent. Each turn of the loop
first sends what waits in the spool (this pilot's reports and those a dead pilot left), and the
pilot does not exit while reports of its own are undelivered, up to the horizon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ailuro.pilot.client import (
    Backoff,
    Delivery,
    Retry,
    Server,
    ServerRefused,
    ServerUnavailable,
    Spool,
    SpoolError,
    default_spool_dir,
    sleep_unless,
)
from ailuro.pilot.diagnose import Outcome, diagnose, output_lines
from ailuro.pilot.monitor import Sample
from ailuro.pilot.runner import Limits, PayloadResult, run_payload

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
    spool: Path | None = None  # default: the node's (default_spool_dir)
    idle_wait_s: float = 0.0  # keep asking this long for work before exiting
    keep_workdirs: bool = False
    node: str = field(default_factory=socket.gethostname)
    batch_id: str = field(default_factory=lambda: os.environ.get("SLURM_JOB_ID", ""))
    worker_id: str = field(
        default_factory=lambda: os.environ.get("AILURO_WORKER_ID", os.environ.get("HARVESTER_WORKER_ID", ""))
    )
    sample_s: float = 0.5
    retry: Retry = field(default_factory=Retry)  # acquire and final reports: attempts and horizon
    # After SIGTERM (the batch system's SIGKILL follows soon), wait at most this long for the
    # server to take this pilot's reports; what is left waits in the spool for the next pilot.
    stop_grace_s: float = 30.0


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


def payload_environment(server_url: str, node: dict[str, str], job: dict[str, str]) -> dict[str, str]:
    """The environment of a payload, before the pilot's per-attempt variables: the node's, then the
    job's, over defaults that point PanDA's own client code in the payload at this server.

    ctrl_bps_panda's `edgenode/cmd_line_decoder.py` (every `bps` job) downloads the job's sandbox
    with panda-client's `Client.getFile`, which reads `PANDACACHE_URL` when it is imported; a PanDA
    pilot exports `PANDA_SERVER_URL` to its payloads. `PANDA_BEHIND_REAL_LB` stops panda-client from
    resolving the server's name and replacing it by a reverse-DNS name of one of its addresses
    (PanDA's DNS load balancing, which an ailuro server is not behind). A node or job that sets
    any of these keeps its own value.
    """
    base = server_url.rstrip("/")
    env = {
        "PANDA_SERVER_URL": base,
        "PANDACACHE_URL": f"{base}/server/panda",
        "PANDA_BEHIND_REAL_LB": "1",
    }
    env.update(node)
    env.update(job)
    return env


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


# Exit codes of `ailuro pilot`.
EXIT_OK = 0
EXIT_SERVER_UNAVAILABLE = 2  # acquire failed for the whole retry policy
EXIT_REFUSED = 3  # the server refused the pilot (bad token, queue not allowed)
EXIT_SPOOL_UNUSABLE = 4
EXIT_REPORTS_LEFT = 5  # final reports of this pilot were still undelivered at the horizon

# A final report is first tried this hard before it waits in the spool for the loop's next turn.
FIRST_DELIVERY = Retry(attempts=3, base_s=0.5, horizon_s=10.0)
# Heartbeats and output chunks: the next one comes anyway, so they are not retried for long.
HEARTBEAT_RETRY = Retry(attempts=2, base_s=0.5, horizon_s=5.0)
LOG_RETRY = Retry(attempts=2, base_s=0.2, horizon_s=2.0)
# After a chunk of output could not be stored, later ones are not sent for this long.
LOG_PAUSE_S = 30.0


class Pilot:
    def __init__(self, config: PilotConfig) -> None:
        self.config = config
        self.server = Server(config.url, token=config.token, retry=config.retry)
        # Output chunks go from the reader thread: a connection of their own.
        self.log_server = Server(config.url, token=config.token, retry=LOG_RETRY)
        self.spool = Spool(config.spool or default_spool_dir(), url=config.url, queue=config.queue)
        # This pilot's reports not delivered yet → when they were spooled (time.monotonic()).
        self.own: dict[Path, float] = {}
        self.stopping = False  # SIGTERM: take no new job
        self.stopped_at = 0.0  # time.monotonic() of the first SIGTERM
        self.hard_stop = False  # a second SIGTERM: stop waiting for the server too
        self.jobs_done = 0
        self.timings: list[dict[str, float]] = []

    # ------------------------------------------------------------------ signals
    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            log.warning("signal %d again: exiting without waiting for the server", signum)
            self.hard_stop = True
            return
        log.warning("signal %d: stopping after the current job is reported (preempted)", signum)
        self.stopping = True
        self.stopped_at = time.monotonic()

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """Run jobs until there is no work, the lifetime or job count is used up, or SIGTERM; then
        wait until this pilot's final reports are delivered (at most the retry horizon)."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        try:
            self.spool.prepare()
        except SpoolError as exc:
            if self.config.spool is not None:
                log.error("%s", exc)
                return EXIT_SPOOL_UNUSABLE
            # The node's default spool is unusable: keep reports in this pilot's own folder (a
            # later pilot with the same --workdir still finds them) rather than not at all.
            fallback = self.config.workdir / "spool"
            log.warning("%s; spooling to %s instead", exc, fallback)
            self.spool = Spool(fallback, url=self.config.url, queue=self.config.queue)
            try:
                self.spool.prepare()
            except SpoolError as again:
                log.error("%s", again)
                return EXIT_SPOOL_UNUSABLE
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        try:
            code = self._loop()
            code = self._drain(code)
        finally:
            self.server.close()
            self.log_server.close()
        return code

    def _loop(self) -> int:
        deadline = time.monotonic() + self.config.lifetime_s
        idle_since: float | None = None
        while not self.stopping and time.monotonic() < deadline:
            if self.config.max_jobs and self.jobs_done >= self.config.max_jobs:
                log.info("max jobs (%d) reached", self.config.max_jobs)
                break
            acquired_at = time.monotonic()
            try:
                job = self._acquire(deadline)
            except ServerUnavailable as exc:
                log.error("cannot acquire a job: %s", exc)
                return EXIT_SERVER_UNAVAILABLE
            except ServerRefused as exc:
                log.error("server refused the pilot: %s", exc)
                return EXIT_REFUSED
            if job is None:
                if self.stopping or time.monotonic() >= deadline:
                    break
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self.config.idle_wait_s:
                    log.info("no work for queue %s; exiting", self.config.queue)
                    break
                time.sleep(min(2.0, self.config.idle_wait_s))
                continue
            idle_since = None
            self._run_job(job, acquired_at)
            self.jobs_done += 1
        return EXIT_OK

    def _acquire_params(self, deadline: float) -> dict[str, Any]:
        return {
            "site_name": self.config.queue,
            "computing_element": self.config.queue,
            "n_jobs": 1,
            "node": self.config.node,
            "memory": _node_memory_mb(),
            "disk_space": shutil.disk_usage(self.config.workdir).free // 2**20,
            "remaining_time": int(max(0, deadline - time.monotonic())),
            "worker_id": self.config.worker_id,
            "batch_id": self.config.batch_id,
        }

    def _acquire(self, deadline: float) -> JobSpec | None:
        """One job, or None (no work, or told to stop). While the server is unavailable it asks
        again with backoff, sending the spool's reports before each try, until the retry policy is
        used up (ServerUnavailable)."""

        def give_up() -> bool:
            return self.stopping or time.monotonic() >= deadline

        self._flush_spool()
        try:
            reply = self.server.post(
                "acquire_jobs",
                lambda: self._acquire_params(deadline),
                stop=give_up,
                between=self._flush_spool,
            )
        except ServerUnavailable:
            if give_up():
                return None
            raise
        data = reply.data if isinstance(reply.data, dict) else {}
        jobs = data.get("jobs") or []
        if not reply.success or not jobs:
            log.info("no job: %s", reply.message or "empty reply")
            return None
        return JobSpec.from_wire(jobs[0])

    # ------------------------------------------------------------------ the spool
    def _own_pending(self) -> list[Path]:
        """This pilot's reports still in the spool (another pilot may have delivered some)."""
        for path in [p for p in self.own if not p.exists()]:
            del self.own[path]
        return list(self.own)

    def _flush_spool(self) -> float | None:
        """Send what waits in the node's spool for this server and queue; the server's
        Retry-After when it could not take them."""
        if not self.spool.pending():
            self.own.clear()
            return None
        result = self.spool.flush(self.server)
        for path in [*result.delivered, *result.refused, *result.gone]:
            self.own.pop(path, None)
        if result.delivered:
            log.info("delivered %d spooled report(s)", len(result.delivered))
        return result.retry_after

    def _drain(self, code: int) -> int:
        """Before exiting: keep sending this pilot's undelivered reports, with backoff, until they
        are delivered or the oldest is older than the retry horizon — after SIGTERM, for at most
        the stop grace; a second SIGTERM ends the wait."""
        backoff: Backoff | None = None
        while self._own_pending() and not self.hard_stop:
            now = time.monotonic()
            left = self.config.retry.horizon_s - (now - min(self.own.values()))
            if self.stopping:
                left = min(left, self.config.stop_grace_s - (now - self.stopped_at))
            if left <= 0:
                break
            retry_after = self._flush_spool()
            if not self._own_pending():
                break
            backoff = backoff or Backoff(replace(self.config.retry, horizon_s=left))
            delay = backoff.next(retry_after)
            if delay is None:
                break
            delay = min(delay, left)
            log.warning(
                "%d final report(s) of this pilot not delivered yet; retrying in %.1f s (giving up in %.0f s)",
                len(self.own),
                delay,
                left,
            )
            sleep_unless(delay, self._grace_over, time.sleep)
        left_behind = self._own_pending()
        if not left_behind:
            return code
        for path in left_behind:
            log.error(
                "UNDELIVERED final report left in the spool: %s (%s); the next pilot of queue %s "
                "on this node sends it",
                path,
                _describe_report(path),
                self.config.queue,
            )
        return EXIT_REPORTS_LEFT

    def _grace_over(self) -> bool:
        if self.hard_stop:
            return True
        return self.stopping and time.monotonic() - self.stopped_at >= self.config.stop_grace_s

    # ------------------------------------------------------------------ one job
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
        env = payload_environment(self.config.url, dict(os.environ), job.environment)
        env.update({"PANDAID": str(job.pandaid), "AILURO_ATTEMPT": str(job.attemptnr)})
        if job.taskid:
            env["PanDA_TaskID"] = str(job.taskid)
        peak = Sample()

        def heartbeat(sample: Sample, wall_s: float) -> bool:
            # PanDA's maxRSS/maxPSS are the peaks so far, not the last sample.
            peak.rss_kb = max(peak.rss_kb, sample.rss_kb)
            peak.pss_kb = max(peak.pss_kb, sample.pss_kb)
            update = self._base_update(job, "running")
            update.update(
                {
                    "max_rss": peak.rss_kb,
                    "max_pss": peak.pss_kb,
                    "cpu_consumption_time": round(sample.cpu_s, 2),
                    "start_time": _utc(time.time() - wall_s),
                }
            )
            try:
                reply = self.server.post("update_job", update, retry=HEARTBEAT_RETRY)
            except ServerUnavailable as exc:
                log.warning("heartbeat for %d not delivered: %s", job.pandaid, exc)
                return False
            except ServerRefused as exc:
                if exc.credentials:
                    log.error("heartbeat for %d: credentials refused (%s)", job.pandaid, exc)
                    return False
                # The server no longer knows this dispatch (stale attempt or lease): stop working on it.
                log.warning("heartbeat for %d refused (%s): killing the payload", job.pandaid, exc)
                return True
            if reply.wants_kill:
                log.warning("server says %s for job %d: killing the payload", reply.command, job.pandaid)
                return True
            return False

        paused_until = 0.0
        lost_bytes = 0

        def log_sink(sequence: int, text: str) -> None:
            # Output is best effort on the wire (the full copy stays in the work dir): while the
            # server is unavailable, chunks are dropped, and the next stored one says how much.
            nonlocal paused_until, lost_bytes
            if time.monotonic() < paused_until:
                lost_bytes += len(text.encode())
                return
            if lost_bytes:
                text = f"[ailuro pilot: {lost_bytes} bytes of output not stored while the server was unavailable; see payload.out]\n{text}"
            payload = {
                "job_id": job.pandaid,
                "attempt_nr": job.attemptnr,
                "lease": job.lease,
                "sequence": sequence,
                "text": text,
            }
            try:
                self.log_server.post("append_log", payload)
            except ServerUnavailable as exc:
                log.warning(
                    "log chunk %d of %d not stored (%s); pausing output for %.0f s",
                    sequence,
                    job.pandaid,
                    exc,
                    LOG_PAUSE_S,
                )
                paused_until = time.monotonic() + LOG_PAUSE_S
                lost_bytes += len(text.encode())
            except ServerRefused as exc:
                log.warning("log chunk %d of %d not stored: %s", sequence, job.pandaid, exc)
            else:
                lost_bytes = 0

        memory_kb = job.memory_mb * 1024 if job.memory_mb else None
        result = run_payload(
            job.command,
            workdir=workdir,
            env=env,
            limits=Limits(
                memory_kb=memory_kb,
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
        update = self._final_update(job, result)
        accepted = self._report(job, update)
        timing = {
            "pandaid": float(job.pandaid),
            "acquire_to_start_s": result.started_mono - acquired_at,
            "end_to_report_s": time.monotonic() - result.exited_mono,
        }
        self.timings.append(timing)
        log.info("job %d done: %s", job.pandaid, json.dumps(timing))
        if accepted and update["job_status"] == "finished" and not self.config.keep_workdirs:
            shutil.rmtree(workdir, ignore_errors=True)

    def _final_update(self, job: JobSpec, result: PayloadResult) -> dict[str, Any]:
        """The final update_job: state, times, measured peaks (kB) and the error fields of the
        diagnosis (`ailuro.pilot.diagnose`)."""
        exit_code = result.exit_code if result.exit_code is not None else 0
        stop = (result.pilot_error_code, result.pilot_error_diag) if result.pilot_error_code else None
        diagnosis = diagnose(
            Outcome(
                exit_code=exit_code,
                pilot_stop=stop,
                peak_rss_kb=result.max_rss_kb,
                memory_limit_kb=job.memory_mb * 1024 if job.memory_mb else None,
                oom_killed=result.oom_killed,
            ),
            output_lines(result.tail, complete=result.tail_complete),
        )
        update = self._base_update(job, "failed" if diagnosis.failed else "finished")
        metrics = f"coreCount={job.cores} logBytes={result.log_bytes} logChunks={result.log_chunks}"
        if diagnosis.signal:
            metrics += f" exitSignal={diagnosis.signal}"
        update.update(
            {
                "start_time": _utc(result.started_at),
                "end_time": _utc(result.ended_at),
                "max_rss": result.max_rss_kb,
                "max_pss": result.max_pss_kb,
                "cpu_consumption_time": result.cpu_s,
                "cpu_consumption_unit": "s",
                **diagnosis.fields(),
                "pilot_timing": f"0|0|{result.wall_s:.0f}|0|0|0",
                "job_metrics": metrics,
            }
        )
        if diagnosis.failed:
            log.info(
                "job %d failed: exit %d, pilot %d %s, exe %d %s",
                job.pandaid,
                diagnosis.trans_exit_code,
                diagnosis.pilot_error_code,
                diagnosis.pilot_error_diag,
                diagnosis.exe_error_code,
                diagnosis.exe_error_diag,
            )
        return update

    def _report(self, job: JobSpec, update: dict[str, Any]) -> bool:
        """Spool the final update, then send it; True when the server took it now. Otherwise it
        stays in the spool and the loop sends it on its next turns."""
        try:
            path = self.spool.put("update_job", update)
        except OSError as exc:
            # No room for the spool (full disk?): hold the report in memory for the whole policy.
            log.error("cannot spool the final report of %d (%s); sending it directly", job.pandaid, exc)
            try:
                self.server.post("update_job", update, stop=lambda: self.hard_stop)
            except (ServerUnavailable, ServerRefused) as direct:
                log.error("final report of %d LOST: %s", job.pandaid, direct)
                return False
            return True
        self.own[path] = time.monotonic()
        # Another pilot of the node may be sending it already (its spool flush found it the moment
        # it was written): wait for that one try, bounded by the connection timeout, rather than
        # call it undelivered.
        outcome = self.spool.deliver(
            path, self.server, retry=FIRST_DELIVERY, wait_s=self.server.timeout_s + 5
        )
        if outcome in (Delivery.DELIVERED, Delivery.GONE):
            self.own.pop(path, None)
            return True
        if outcome is Delivery.REFUSED:
            self.own.pop(path, None)
            log.error("final report of %d refused by the server", job.pandaid)
            return False
        log.error(
            "final report of %d not delivered yet; it waits in %s and is sent again before the next "
            "job (for up to %.0f s)",
            job.pandaid,
            path,
            self.config.retry.horizon_s,
        )
        return False


def _describe_report(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        payload = json.loads(path.read_text())["payload"]
        return f"job {payload.get('job_id')} attempt {payload.get('attempt_nr')} {payload.get('job_status')}"
    return "unreadable"
