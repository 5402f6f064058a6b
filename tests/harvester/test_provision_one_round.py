"""provision_one_round with the local plugin: real pilot subprocesses, real Worker bookkeeping."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harvester.models import Worker, WorkerStatus
from harvester.provisioning import (
    ProvisionerConfig,
    pilot_argv,
    provision_one_round,
    shutdown_workers,
    workers_target,
)
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def config(tmp_path: Path) -> Iterator[ProvisionerConfig]:
    cfg = ProvisionerConfig(url=dead_url(), base_dir=tmp_path, pilot_extra_args=("--retries", "1"))
    yield cfg
    # Stop any pilot a test left behind, by its recorded pid.
    for worker in Worker.objects.exclude(batch_id=""):
        pid = int(worker.batch_id.split(":")[0])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("activated", "queued", "live", "expected"),
    [(5, 0, 0, 2), (5, 2, 2, 0), (1, 0, 0, 1), (0, 0, 0, 0), (10, 1, 2, 1), (10, 0, 3, 0)],
)
def test_workers_target_is_bounded_by_queued_and_live_limits(
    activated: int, queued: int, live: int, expected: int
) -> None:
    assert (
        workers_target(activated=activated, queued=queued, live=live, max_queued=2, max_workers=3) == expected
    )


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_queue_with_activated_jobs_gets_pilots_and_their_exit_is_recorded(config: ProvisionerConfig) -> None:
    queue = QueueFactory(plugin="local", max_workers=3, max_queued_workers=2)
    for _ in range(5):
        JobFactory(jobstatus="activated", queue=queue)

    assert provision_one_round(config=config) == 2
    workers = list(Worker.objects.filter(queue=queue).order_by("pk"))
    assert [w.status for w in workers] == ["submitted", "submitted"]
    assert all(w.batch_id and w.plugin == "local" for w in workers)
    assert Path(workers[0].stdout_path).name == "pilot.out"
    assert (config.base_dir / "pilot-token").stat().st_mode & 0o777 == 0o600

    # The pilots cannot reach the server (dead URL, one attempt): they exit with 2, recorded as
    # failed with that exit code; new pilots replace them, within the limits.
    def recorded() -> bool:
        provision_one_round(config=config)
        # The two first pilots, not any two: a replacement may fail before one of them is polled.
        return Worker.objects.filter(pk__in=[w.pk for w in workers], status="failed").count() == 2

    wait_for(recorded)
    failed = Worker.objects.filter(pk__in=[w.pk for w in workers]).get(pk=workers[0].pk)
    assert failed.exit_code == 2
    assert failed.ended_at is not None
    assert "cannot acquire a job" in Path(failed.stderr_path).read_text()
    assert Worker.objects.filter(queue=queue, status__in=["submitted", "running"]).count() <= 3


def test_a_worker_the_batch_system_forgot_is_marked_missed(config: ProvisionerConfig) -> None:
    queue = QueueFactory(plugin="local")
    JobFactory(jobstatus="activated", queue=queue)
    gone = Worker.objects.create(queue=queue, plugin="local", batch_id="999999999:1", status="running")
    Worker.objects.filter(pk=gone.pk).update(modified_at=gone.modified_at - timedelta(seconds=600))
    fresh = Worker.objects.create(queue=queue, plugin="local", batch_id="999999998:1", status="submitted")

    provision_one_round(config=config)
    gone.refresh_from_db()
    fresh.refresh_from_db()
    assert gone.status == WorkerStatus.MISSED
    assert "unknown to local" in gone.diag
    assert fresh.status == WorkerStatus.SUBMITTED  # not yet past lost_after_s


def test_a_refused_submission_fails_the_worker_and_says_why(config: ProvisionerConfig) -> None:
    queue = QueueFactory(plugin="local", plugin_params={"workdir_base": "/proc/not-writable"})
    JobFactory(jobstatus="activated", queue=queue)
    assert provision_one_round(config=config) == 0
    worker = Worker.objects.get(queue=queue)
    assert worker.status == WorkerStatus.FAILED
    assert "submit failed" in worker.diag


def test_offline_queue_and_queue_without_work_get_no_pilots(config: ProvisionerConfig) -> None:
    offline = QueueFactory(plugin="local", status="offline")
    JobFactory(jobstatus="activated", queue=offline)
    QueueFactory(plugin="local")
    assert provision_one_round(config=config) == 0
    assert not Worker.objects.exists()


def test_shutdown_cancels_live_local_pilots(config: ProvisionerConfig, tmp_path: Path) -> None:
    queue = QueueFactory(plugin="local")
    JobFactory(jobstatus="activated", queue=queue)
    slow = ProvisionerConfig(url=dead_url(), base_dir=tmp_path, pilot_extra_args=("--retries", "30"))
    provision_one_round(config=slow)
    worker = Worker.objects.get(queue=queue)
    pid = int(worker.batch_id.split(":")[0])
    assert shutdown_workers(config=slow) == 1
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.CANCELLED
    wait_for(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
        )
    )


def test_panda_pilot_flavour_runs_only_with_nokill_in_a_pid_namespace(tmp_path: Path) -> None:
    queue = QueueFactory(pilot_flavour="panda", plugin_params={"panda_pilot": "/opt/pilot3/pilot.py"})
    argv = pilot_argv(queue, ProvisionerConfig(url="http://127.0.0.1:8000"), tmp_path, tmp_path / "token")
    assert argv[:6] == ["env", "PILOT_NOKILL=1", "unshare", "--pid", "--fork", "--mount-proc"]
    assert "/opt/pilot3/pilot.py" in argv
    assert argv[argv.index("-q") + 1] == queue.name
    assert argv[argv.index("--url") + 1] == "http://127.0.0.1"
    assert argv[argv.index("-p") + 1] == "8000"

    ailuro = pilot_argv(QueueFactory(), ProvisionerConfig(url="http://h:1"), tmp_path, tmp_path / "token")
    assert ailuro[1:4] == ["-m", "ailuro.cli", "pilot"]
    assert ailuro[ailuro.index("--token-file") + 1] == str(tmp_path / "token")
