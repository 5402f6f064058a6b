"""A cluster of two labels run by the real `ailuro pilot` against the real server (gunicorn on the
test database): the members' results come from the marker lines of the payload output the pilot
streams; one member fails, and only its descendants are pruned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.models import Job, JobAttempt, PayloadLog
from dispatcher.services import broker_one_batch
from dispatcher.services.submit import workflow_submit_spec
from tests.ailuro.server import AiluroServer, pilot_token_file, run_pilot
from tests.factories import QueueFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiluroServer]:
    srv = AiluroServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


def test_pilot_runs_a_two_label_cluster_and_each_member_keeps_its_result(
    server: AiluroServer, tmp_path: Path
) -> None:
    queue = QueueFactory(name="LOCAL_CLUSTER")
    out = tmp_path / "out"
    out.mkdir()
    # Key 1: isr succeeds, calibrate fails. Key 2: isr fails, so calibrate is skipped.
    spec = {
        "name": "clustered",
        "defaults": {"max_attempts": 1},
        "dimensions": {"visit": [1, 2]},
        "labels": {
            "isr": {
                "command": f"echo isr {{visit}} > {out}/isr_{{visit}}; test {{visit}} = 1",
                "over": ["visit"],
            },
            "calibrate": {
                "command": f"echo calibrate {{visit}} > {out}/calibrate_{{visit}}; exit 3",
                "over": ["visit"],
                "after": ["isr"],
            },
            "bkg": {"command": "true", "over": ["visit"], "after": ["isr"]},
        },
        "cluster": {"by": ["visit"], "labels": ["isr", "calibrate"]},
    }
    wf = workflow_submit_spec(owner=UserFactory(username="alice"), spec=spec)
    assert broker_one_batch(limit=100) == 2  # the two clusters; members and bkg wait
    token = pilot_token_file(tmp_path)

    result = run_pilot(server.url, queue.name, token, tmp_path / "p1", "--idle-wait", "2", timeout=120)

    assert result.returncode == 0, result.stderr
    states = dict(Job.objects.filter(workflow=wf).values_list("name", "jobstatus"))
    assert states == {
        "isr_1": "finished",
        "calibrate_1": "failed",
        "bkg_1": "defined",
        "isr+calibrate_cluster_1": "failed",
        "isr_2": "failed",
        "calibrate_2": "pruned",
        "bkg_2": "pruned",
        "isr+calibrate_cluster_2": "failed",
    }
    assert Job.objects.get(workflow=wf, name="bkg_1").pending_parents == 0  # released by isr_1 alone
    assert (out / "isr_1").exists() and (out / "calibrate_1").exists()
    assert not (out / "calibrate_2").exists()  # skipped after its parent failed
    calibrate = Job.objects.get(workflow=wf, name="calibrate_1")
    assert (calibrate.exeerrorcode, calibrate.attemptnr) == (3, 1)
    assert Job.objects.get(workflow=wf, name="isr_2").exeerrorcode == 1
    attempts = dict(JobAttempt.objects.filter(job__workflow=wf).values_list("job__name", "jobstatus"))
    assert attempts == {
        "isr_1": "finished",
        "calibrate_1": "failed",
        "isr+calibrate_cluster_1": "failed",
        "isr_2": "failed",
        "isr+calibrate_cluster_2": "failed",
    }
    cluster = Job.objects.get(workflow=wf, name="isr+calibrate_cluster_1")
    text = "".join(PayloadLog.objects.filter(job=cluster).values_list("text", flat=True))
    assert "ailuro-cluster-member isr_1 exit=0" in text and "ailuro-cluster-member calibrate_1 exit=3" in text
    assert JobAttempt.objects.get(job__name="isr_1", job__workflow=wf).node == cluster.node != ""
