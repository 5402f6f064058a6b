"""The provisioner: keeps each queue supplied with pilots through its batch-system plugin.

`provision_one_round` is the `provisioner` loop's one-step function (config/loops.py;
docs/architecture.md#loops): Celery beat and `manage.py run_loops` run it with the configuration of
the settings (AILURO_HARVESTER_*), `manage.py run_local_pilots` (the embedded run) with its own.
It holds no state of its own between rounds: workers and their batch ids are Worker rows.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from core.roles import Role
from core.services import token_create
from dispatcher.models import Job, PilotFlavour, Queue, QueueStatus
from dispatcher.states import JobStatus
from harvester.models import Worker, WorkerStatus
from harvester.plugins import Plugin, PluginError, WorkerSpec, plugin_for
from harvester.services import worker_create, worker_record_submission, worker_set_state

log = logging.getLogger(__name__)

LIVE = (WorkerStatus.SUBMITTED, WorkerStatus.RUNNING)


@dataclass(frozen=True)
class ProvisionerConfig:
    url: str  # the server URL the pilots talk to
    base_dir: Path = field(default_factory=lambda: Path(settings.DATA_DIR) / "harvester")
    plugins: frozenset[str] | None = None  # only queues using these plugins; None: all
    queues: frozenset[str] | None = None  # only these queues; None: all
    lost_after_s: float = 120.0  # unknown to the batch system this long → missed
    pilot_idle_wait_s: float = 5.0
    pilot_heartbeat_s: float = 60.0
    pilot_lifetime_s: float = 24 * 3600
    python: str = sys.executable
    panda_pilot: str = ""  # path of the real PanDA pilot's pilot.py (pilot_flavour=panda)
    pilot_extra_args: tuple[str, ...] = ()  # appended to the ailuro pilot's command line


def pilot_token_file(base_dir: Path) -> Path:
    """The pilot token the provisioner hands to its pilots, made once (role pilot, mode 600)."""
    path = base_dir / "pilot-token"
    if not path.exists():
        base_dir.mkdir(parents=True, exist_ok=True)
        raw = token_create(username="harvester", role=Role.PILOT, name="provisioner pilots")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(raw)
        tmp.chmod(0o600)
        tmp.replace(path)
    return path


def pilot_argv(queue: Queue, config: ProvisionerConfig, workdir: Path, token_file: Path) -> list[str]:
    """The pilot command line for a queue's pilot flavour."""
    if queue.pilot_flavour == PilotFlavour.PANDA:
        # PanDA's pilot kills its user's orphans: only with PILOT_NOKILL and in a PID namespace.
        port = config.url.rsplit(":", 1)[-1].split("/")[0]
        host = config.url.rsplit(":", 1)[0]
        return [
            "env",
            "PILOT_NOKILL=1",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            config.python,
            config.panda_pilot or str(queue.plugin_params.get("panda_pilot", "pilot.py")),
            "-q",
            queue.name,
            "--pilot-user",
            "generic",
            "-w",
            "generic",
            "--url",
            host,
            "-p",
            port,
            "--queuedata-url",
            f"{config.url}/cache/schedconfig/{queue.name}.all.json",
            "-g",
            f"{config.url}/trf/user",
            "-b",
            "-d",
            "-j",
            "managed",
            "-x",
            "1",
            "-a",
            str(workdir / "work"),
        ]
    return [
        config.python,
        "-m",
        "ailuro.cli",
        "pilot",
        "--url",
        config.url,
        "--queue",
        queue.name,
        "--token-file",
        str(token_file),
        "--workdir",
        str(workdir / "work"),
        "--idle-wait",
        str(config.pilot_idle_wait_s),
        "--heartbeat",
        str(config.pilot_heartbeat_s),
        "--lifetime",
        str(config.pilot_lifetime_s),
        *config.pilot_extra_args,
    ]


def worker_dir(queue: Queue, config: ProvisionerConfig, worker_id: int) -> Path:
    base = Path(str(queue.plugin_params.get("workdir_base") or config.base_dir / "workers"))
    return base / queue.name / str(worker_id)


def workers_target(*, activated: int, queued: int, live: int, max_queued: int, max_workers: int) -> int:
    """New pilots to submit: one per activated job not already covered by a queued pilot,
    bounded by the queue's limits on queued and on live workers."""
    return max(0, min(activated - queued, max_queued - queued, max_workers - live))


def _plugin(queue: Queue, live: list[Worker]) -> Plugin:
    params: dict[str, Any] = dict(queue.plugin_params or {})
    if queue.plugin == "local":
        params["workdirs"] = {w.batch_id: str(Path(w.stdout_path).parent) for w in live if w.batch_id}
    return plugin_for(queue.plugin, params)


def _poll(queue: Queue, plugin: Plugin, live: list[Worker], config: ProvisionerConfig) -> int:
    """Record what the batch system says; mark workers it has not known for a while as missed."""
    changes = 0
    states = plugin.poll([w.batch_id for w in live if w.batch_id])
    now = timezone.now()
    seen = []
    for worker in live:
        state = states.get(worker.batch_id) if worker.batch_id else None
        if state is not None:
            seen.append(worker.pk)
            if state.status != worker.status:
                changes += worker_set_state(
                    worker_id=worker.pk,
                    status=state.status,
                    exit_code=state.exit_code,
                    node=state.node,
                    diag=state.diag,
                )
        elif now - worker.modified_at > timedelta(seconds=config.lost_after_s):
            changes += worker_set_state(
                worker_id=worker.pk,
                status=WorkerStatus.MISSED,
                diag=f"unknown to {queue.plugin} for more than {config.lost_after_s:.0f} s",
            )
    if seen:
        # "Last seen": a worker that later vanishes is missed only after lost_after_s.
        Worker.objects.filter(pk__in=seen).update(modified_at=now)
    return changes


def _submit(queue: Queue, plugin: Plugin, n: int, config: ProvisionerConfig) -> int:
    token_file = pilot_token_file(config.base_dir)
    submitted = 0
    for _ in range(n):
        worker = worker_create(queue=queue, plugin=queue.plugin)
        folder = worker_dir(queue, config, worker.pk)
        spec = WorkerSpec(
            worker_id=worker.pk,
            queue=queue.name,
            argv=pilot_argv(queue, config, folder, token_file),
            workdir=folder,
            env={"AILURO_WORKER_ID": str(worker.pk), "PYTHONPATH": str(settings.BASE_DIR)},
            cores=queue.max_cores,
            memory_mb=int(queue.plugin_params.get("memory_mb", 0)),
            walltime_s=int(queue.plugin_params.get("walltime_s", 0)),
        )
        try:
            result = plugin.submit(spec)
        except PluginError as exc:
            log.warning("queue %s: submitting worker %d failed: %s", queue.name, worker.pk, exc)
            worker_set_state(worker_id=worker.pk, status=WorkerStatus.FAILED, diag=f"submit failed: {exc}")
            break  # the batch system refuses: try again next round, not n times now
        worker_record_submission(worker_id=worker.pk, submitted=result)
        submitted += 1
    return submitted


def provisioner_config_from_settings() -> ProvisionerConfig | None:
    """The provisioner as the settings configure it (AILURO_HARVESTER_*), every plugin and queue;
    None without AILURO_HARVESTER_SERVER_URL, since pilots would not know where to call."""
    conf = settings.AILURO_HARVESTER
    if not conf["SERVER_URL"]:
        return None
    return ProvisionerConfig(
        url=str(conf["SERVER_URL"]).rstrip("/"),
        lost_after_s=float(conf["LOST_AFTER_S"]),
        pilot_heartbeat_s=float(conf["PILOT_HEARTBEAT_S"]),
    )


def provision_one_round(*, config: ProvisionerConfig | None = None) -> int:
    """One pass over the queues; returns how many workers were submitted, changed or cancelled.
    Without `config`, the settings' (`provisioner_config_from_settings`); nothing happens when
    they name no server URL.

    Per queue (online, brokeroff or test; offline queues get no new pilots but are still polled):
    1. poll its live workers through the plugin; record state, exit code, node; mark missed;
    2. count its activated jobs;
    3. none: cancel workers still waiting in the batch system (running pilots leave by themselves
       when they find no work);
    4. otherwise submit `workers_target(...)` new pilots.
    """
    config = config or provisioner_config_from_settings()
    if config is None:
        log.warning("provisioner: AILURO_HARVESTER_SERVER_URL is not set; no pilots submitted")
        return 0
    queues = Queue.objects.all()
    if config.plugins is not None:
        queues = queues.filter(plugin__in=config.plugins)
    if config.queues is not None:
        queues = queues.filter(name__in=config.queues)
    activated = dict(
        Job.objects.filter(jobstatus=JobStatus.ACTIVATED, queue__in=queues)
        .values_list("queue_id")
        .annotate(n=Count("pk"))
    )
    live_by_queue: dict[int, list[Worker]] = {}
    for worker in Worker.objects.filter(status__in=LIVE, queue__in=queues).order_by("pk"):
        live_by_queue.setdefault(worker.queue_id, []).append(worker)
    actions = 0
    for queue in queues:
        live = live_by_queue.get(queue.pk, [])
        if not live and not activated.get(queue.name):
            continue
        try:
            plugin = _plugin(queue, live)
            actions += _poll(queue, plugin, live, config)
            live = list(Worker.objects.filter(queue=queue, status__in=LIVE))
            queued = [w for w in live if w.status == WorkerStatus.SUBMITTED]
            waiting = activated.get(queue.name, 0)
            if not waiting:
                idle = [w for w in queued if w.batch_id]
                if idle:
                    plugin.cancel([w.batch_id for w in idle])
                    for w in idle:
                        actions += worker_set_state(
                            worker_id=w.pk, status=WorkerStatus.CANCELLED, diag="queue has no more work"
                        )
                continue
            if queue.status == QueueStatus.OFFLINE:
                continue
            n = workers_target(
                activated=waiting,
                queued=len(queued),
                live=len(live),
                max_queued=queue.max_queued_workers,
                max_workers=queue.max_workers,
            )
            actions += _submit(queue, plugin, n, config)
        except PluginError as exc:
            log.warning("queue %s: %s", queue.name, exc)
    return actions


def shutdown_workers(*, config: ProvisionerConfig) -> int:
    """Cancel every live worker of the configured plugins/queues (the embedded run's Ctrl-C)."""
    queues = Queue.objects.all()
    if config.plugins is not None:
        queues = queues.filter(plugin__in=config.plugins)
    n = 0
    for queue in queues:
        live = list(Worker.objects.filter(queue=queue, status__in=LIVE))
        if not live:
            continue
        try:
            _plugin(queue, live).cancel([w.batch_id for w in live if w.batch_id])
        except PluginError as exc:
            log.warning("queue %s: %s", queue.name, exc)
        for w in live:
            n += worker_set_state(worker_id=w.pk, status=WorkerStatus.CANCELLED, diag="provisioner stopped")
    return n
