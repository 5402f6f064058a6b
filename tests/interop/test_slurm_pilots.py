"""Jobs run through sbatch-submitted ailuro pilots on the real single-node Slurm, end to end:
the provisioner submits pilots with sbatch, the pilots take jobs from the real server.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.models import Job, JobAttempt, RetryRule
from dispatcher.services import NewJob
from harvester.models import Worker
from harvester.provisioning import ProvisionerConfig, provision_one_round
from tests.ailuro.server import AiluroServer, activated_jobs
from tests.factories import QueueFactory

# One Slurm for the machine: its tests run on one pytest-xdist worker (tests/workers.py).
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.xdist_group("slurm"),
]


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiluroServer]:
    """One server for the module (starting gunicorn costs seconds); tests see it on the test DB."""
    srv = AiluroServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def cancel_leftovers() -> Iterator[None]:
    yield
    ids = [w.batch_id for w in Worker.objects.filter(plugin="slurm").exclude(batch_id="")]
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=30)


def test_twenty_jobs_run_to_completion_through_sbatch_submitted_pilots(
    server: AiluroServer, tmp_path: Path, cancel_leftovers: None
) -> None:
    queue = QueueFactory(name="SLURM_Q", plugin="slurm", max_workers=6, max_queued_workers=6)
    jobs = activated_jobs(
        queue, [NewJob(name=f"j{i:02d}", label="step", command=f"echo job {i}; sleep 0.5") for i in range(20)]
    )
    config = ProvisionerConfig(url=server.url, base_dir=tmp_path / "harvester", pilot_heartbeat_s=5)
    deadline = time.monotonic() + 150
    while Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="finished").count() < 20:
        assert time.monotonic() < deadline, list(Job.objects.values_list("name", "jobstatus"))
        provision_one_round(config=config)
        time.sleep(1)

    # Pilots leave when the queue is empty; the provisioner records their end.
    while Worker.objects.filter(status__in=["submitted", "running"]).exists():
        assert time.monotonic() < deadline + 60
        provision_one_round(config=config)
        time.sleep(1)
    workers = list(Worker.objects.filter(queue=queue))
    assert 1 <= len(workers) <= 20
    assert all(w.batch_id.isdigit() for w in workers)
    assert {w.status for w in workers} == {"finished"}
    assert {w.exit_code for w in workers} == {0}
    assert all(w.node and w.ended_at and w.stdout_path.endswith(f"slurm-{w.batch_id}.out") for w in workers)
    # Each job ran in a Slurm job of ours (the pilot reports SLURM_JOB_ID as its batch id).
    batch_ids = {w.batch_id for w in workers}
    assert (
        set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("batch_id", flat=True)) <= batch_ids
    )


def test_scancel_of_a_running_worker_gives_its_job_back(
    server: AiluroServer, tmp_path: Path, cancel_leftovers: None
) -> None:
    queue = QueueFactory(name="SLURM_CANCEL_Q", plugin="slurm", max_workers=1, max_queued_workers=1)
    # The site's retry policy: a preempted attempt (pilot error 1379) is transient.
    RetryRule.objects.get_or_create(
        name="test: preempted pilots retry",
        defaults={"error_family": "pilot", "code": 1379, "action": "retry"},
    )
    [job] = activated_jobs(queue, [NewJob(name="long", label="long", command="sleep 120")])
    config = ProvisionerConfig(url=server.url, base_dir=tmp_path / "harvester", pilot_heartbeat_s=5)
    provision_one_round(config=config)
    worker = Worker.objects.get(queue=queue)
    deadline = time.monotonic() + 60
    while Job.objects.get(pk=job.pk).jobstatus != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)

    subprocess.run(["scancel", worker.batch_id], check=True, timeout=30)

    # The pilot hears SIGTERM, stops the payload and reports the attempt preempted (1379).
    while not JobAttempt.objects.filter(job_id=job.pk, attemptnr=1).exists():
        assert time.monotonic() < deadline, Job.objects.get(pk=job.pk).jobstatus
        time.sleep(0.3)
    attempt = JobAttempt.objects.get(job_id=job.pk, attemptnr=1)
    assert attempt.piloterrorcode == 1379
    # The worker is recorded as cancelled by the batch system.
    while Worker.objects.get(pk=worker.pk).status in {"submitted", "running"}:
        assert time.monotonic() < deadline
        provision_one_round(config=config)
        time.sleep(0.5)
    assert Worker.objects.get(pk=worker.pk).status == "cancelled"
    # The job is not lost: the retrier gave it a new attempt, waiting for a pilot again.
    job.refresh_from_db()
    assert job.attemptnr == 2, (job.jobstatus, job.attemptnr)
    assert job.jobstatus in {"defined", "activated"}
