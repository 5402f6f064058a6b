"""The demo campaign watched and recovered with real parts: the ailuro server (gunicorn) on the
test database and real `ailuro pilot` processes running the payloads; the advancer and brokerage
rounds are called here, as the loops would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import ActionLog, Group
from campaigns.services import group_restart
from dispatcher.models import Job, PayloadLog
from dispatcher.services import broker_one_batch
from embedded.demo.campaign import demo_campaign_submit
from tests.ailuro.server import AiluroServer, pilot_token_file, run_pilot
from tests.factories import QueueFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AiluroServer]:
    srv = AiluroServer(tmp_path / "srv")
    (tmp_path / "srv").mkdir()
    srv.start()
    yield srv
    srv.stop()


def _run_until_idle(server: AiluroServer, queue: str, token: Path, workdir: Path) -> None:
    """Brokerage and a pilot, until no released job is left for the queue."""
    for _ in range(10):
        broker_one_batch()
        if not Job.objects.filter(jobstatus="activated").exists():
            return
        result = run_pilot(server.url, queue, token, workdir)
        assert result.returncode == 0, result.stderr[-2000:]
    raise AssertionError("jobs kept coming")


def test_an_operator_watches_the_demo_fail_once_and_recovers_it_with_restart(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the demo's one-time failure marker goes here
    queue = QueueFactory(name="DEMO_Q", max_rss_mb=8000)
    token = pilot_token_file(tmp_path, [queue.name])
    campaign = demo_campaign_submit(visits=4, sleep_s=0)

    campaigns_advance_one_round()
    _run_until_idle(server, queue.name, token, tmp_path / "pilot")
    campaigns_advance_one_round()
    group = Group.objects.get(campaign=campaign, step__name="step1")
    # 6 of 8 done: isr_1003 failed and calibrate_1003 was pruned, and neither is ever done.
    assert (group.name, group.status, group.jobs_done, group.jobs_total) == ("1000-1003", "failed", 6, 8)
    jobs = {j.name: j for j in Job.objects.filter(workflow__campaign_attempt__group=group)}
    assert (jobs["isr_1003"].jobstatus, jobs["calibrate_1003"].jobstatus) == ("failed", "pruned")
    assert (jobs["isr_1003"].transexitcode, jobs["isr_1000"].jobstatus) == (65, "finished")
    assert "isr visit=1001" in "".join(
        PayloadLog.objects.filter(job=jobs["isr_1001"]).values_list("text", flat=True)
    )

    group_restart(group_id=group.pk, actor="operator")
    _run_until_idle(server, queue.name, token, tmp_path / "pilot")
    campaigns_advance_one_round()  # step1 accepted, step2's coadd submitted
    _run_until_idle(server, queue.name, token, tmp_path / "pilot")
    campaigns_advance_one_round()

    campaign.refresh_from_db()
    group.refresh_from_db()
    assert (campaign.status, group.status) == ("done", "accepted")
    assert Job.objects.get(pk=jobs["isr_1003"].pk).attemptnr == 2
    assert list(ActionLog.objects.filter(campaign=campaign).order_by("id").values_list("actor", "verb")) == [
        ("demo", "create"),
        ("demo", "launch"),
        ("advancer", "fail"),
        ("operator", "restart"),
        ("advancer", "accept"),
        ("advancer", "accept"),
        ("advancer", "complete"),
    ]
