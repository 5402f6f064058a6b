"""The Slurm plugin against a real single-node Slurm 22.05 (scripts/slurm.sh starts it).

Plugin level: sbatch / squeue / sacct -c / scancel for real. The end-to-end run of jobs through
sbatch-submitted ailuro pilots is further down (it needs the server's pilot protocol).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dispatcher.services import job_transition
from harvester.models import Worker
from harvester.plugins import BatchState, WorkerSpec, plugin_for
from harvester.provisioning import ProvisionerConfig, provision_one_round
from tests.factories import JobFactory, QueueFactory

# One Slurm for the machine: its tests run on one pytest-xdist worker (tests/workers.py).
pytestmark = [pytest.mark.interop, pytest.mark.xdist_group("slurm")]


@pytest.fixture(scope="module", autouse=True)
def slurm_running() -> None:
    assert shutil.which("sbatch"), "Slurm is not installed: run scripts/slurm.sh start (scripts/test.sh does)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30, check=False)
    assert "is UP" in ping.stdout, f"slurmctld is not up: {ping.stdout} {ping.stderr}"


def wait_state(plugin: Any, batch_id: str, wanted: set[str], timeout: float = 40) -> BatchState:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = plugin.poll([batch_id]).get(batch_id)
        if state is not None and state.status in wanted:
            return state
        time.sleep(0.3)
    raise AssertionError(f"job {batch_id} never reached {wanted}; last state {state}")


def spec(tmp_path: Path, argv: list[str], worker_id: int = 1) -> WorkerSpec:
    return WorkerSpec(worker_id=worker_id, queue="SLURM_TEST", argv=argv, workdir=tmp_path / str(worker_id))


def test_a_finished_worker_reports_its_node_and_exit_code(tmp_path: Path) -> None:
    plugin = plugin_for("slurm", {})
    ok = plugin.submit(spec(tmp_path, ["/bin/bash", "-c", "echo pilot says hi; echo $AILURO_WORKER_ID"], 1))
    bad = plugin.submit(spec(tmp_path, ["/bin/bash", "-c", "exit 3"], 2))
    assert ok.batch_id.isdigit()

    done = wait_state(plugin, ok.batch_id, {"finished", "failed"})
    assert (done.status, done.exit_code) == ("finished", 0)
    assert done.node
    assert Path(ok.stdout_path).read_text().split() == ["pilot", "says", "hi", "1"]
    failed = wait_state(plugin, bad.batch_id, {"finished", "failed"})
    assert (failed.status, failed.exit_code) == ("failed", 3)


def test_scancel_of_a_running_worker_is_seen_as_cancelled(tmp_path: Path) -> None:
    plugin = plugin_for("slurm", {})
    job = plugin.submit(spec(tmp_path, ["/bin/sleep", "120"]))
    wait_state(plugin, job.batch_id, {"running"})
    plugin.cancel([job.batch_id])
    state = wait_state(plugin, job.batch_id, {"cancelled", "failed", "finished"})
    assert state.status == "cancelled"


def test_a_held_worker_is_pending_and_unknown_ids_are_left_out(tmp_path: Path) -> None:
    plugin = plugin_for("slurm", {"sbatch_options": ["--hold"]})
    job = plugin.submit(spec(tmp_path, ["/bin/true"]))
    try:
        states = plugin.poll([job.batch_id, "99999999"])
        assert states[job.batch_id].status == "submitted"
        assert "99999999" not in states
    finally:
        plugin.cancel([job.batch_id])


@pytest.mark.django_db
def test_pilots_waiting_in_slurm_are_cancelled_when_the_queue_empties(tmp_path: Path) -> None:
    # Held pilots stay PENDING: what a busy cluster looks like.
    queue = QueueFactory(plugin="slurm", plugin_params={"sbatch_options": ["--hold"]}, max_queued_workers=2)
    jobs = [JobFactory(jobstatus="activated", queue=queue) for _ in range(2)]
    config = ProvisionerConfig(url="http://127.0.0.1:9", base_dir=tmp_path)
    try:
        assert provision_one_round(config=config) == 2
        workers = list(Worker.objects.filter(queue=queue))
        assert all(w.batch_id.isdigit() for w in workers)
        provision_one_round(config=config)
        assert {w.status for w in Worker.objects.filter(queue=queue)} == {"submitted"}

        for job in jobs:  # the work went elsewhere
            job_transition(pandaid=job.pk, to="defined", cause="re-brokered")
        assert provision_one_round(config=config) == 2
        assert {w.status for w in Worker.objects.filter(queue=queue)} == {"cancelled"}
        plugin = plugin_for("slurm", {})
        for w in workers:
            assert wait_state(plugin, w.batch_id, {"cancelled"}).status == "cancelled"
    finally:
        subprocess.run(["scancel", *[w.batch_id for w in Worker.objects.exclude(batch_id="")]], check=False)
