"""/readyz and the loop strip follow a real Celery beat: fresh while it ticks, the loop named once
the beat has stopped for longer than the loop's allowed lag, fresh again when it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from tests.interop.celery_procs import beat_start, broker_purge, process_stop, wait_for, worker_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# The judgment runs in this process: a short allowed lag for brokerage (5 s period) keeps the test
# short; the beat and the worker run the real table.
LAG_S = 12.0


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    broker_purge()
    proc = worker_start("loop-health", log)
    try:
        yield log
    finally:
        process_stop(proc)


def _readyz(client: Client) -> tuple[int, dict[str, object]]:
    response = client.get("/readyz")
    return response.status_code, response.json()


def test_readiness_names_brokerage_when_the_beat_stops_and_clears_when_it_is_back(
    worker: Path, tmp_path: Path, settings
) -> None:
    settings.AILURO_LOOPS = {"brokerage": {"period_s": 5.0, "max_lag_s": LAG_S}}
    settings.AILURO_LOOP_GRACE_S = 0
    client = Client()
    beat_log = tmp_path / "beat.log"
    beat = beat_start(tmp_path / "schedule", beat_log)
    try:
        wait_for(lambda: _readyz(client)[0] == 200, what="brokerage run by the beat", logs=[beat_log, worker])
        assert client.get("/loops/?json").json()["stalled"] == []
    finally:
        process_stop(beat)

    # The beat is gone: no tick reaches the worker, the last run ages past the lag.
    wait_for(lambda: _readyz(client)[0] == 503, what="brokerage named", timeout=LAG_S + 30, logs=[worker])
    status, body = _readyz(client)
    assert status == 503
    assert body["failing"] == ["loops"]
    assert list(body["checks"]["loops"]["stalled"]) == ["brokerage"]  # type: ignore[index]
    assert client.get("/loops/?json").json()["stalled"] == ["brokerage"]
    assert "Loops stalled: brokerage" in client.get("/loops/").content.decode()

    beat = beat_start(tmp_path / "schedule", beat_log)
    try:
        wait_for(lambda: _readyz(client)[0] == 200, what="brokerage running again", logs=[beat_log, worker])
        assert client.get("/loops/?json").json()["stalled"] == []
    finally:
        process_stop(beat)
