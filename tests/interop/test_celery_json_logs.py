"""Celery worker and beat, started as the deployments start them (`celery -q`), write nothing but
one JSON object per line with the time (UTC, RFC 3339), the severity and the logger while they run: a log shipper
needs no parser for them. (At SIGTERM the worker's signal handler still prints one plain line,
"worker: Warm shutdown (MainProcess)", which Celery writes outside logging.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.interop.celery_procs import beat_start, broker_purge, process_stop, wait_for, worker_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _events(log: Path, text: str) -> list[dict[str, object]]:
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"{log.name} line {number} is not JSON: {line!r}") from None
        assert isinstance(event, dict), line
        assert {"time", "severity", "logger", "message"} <= set(event), line
        assert event["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        # UTC, RFC 3339: what Cloud Logging and ECS shippers read without a parser of their own.
        assert datetime.fromisoformat(str(event["time"])).utcoffset() == timedelta(0), line
        assert "T" in str(event["time"]), line
        events.append(event)
    return events


def test_worker_and_beat_write_one_json_object_per_line(tmp_path: Path) -> None:
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    broker_purge()
    worker = worker_start("json-logs", worker_log)
    beat = beat_start(tmp_path / "schedule", beat_log)
    try:
        # The worker says it is ready and runs a loop task the beat sent: both have logged by then.
        wait_for(
            lambda: "succeeded in" in worker_log.read_text(),
            what="a loop task run by the worker",
            logs=[worker_log, beat_log],
        )
        worker_text, beat_text = worker_log.read_text(), beat_log.read_text()
    finally:
        process_stop(beat)
        process_stop(worker)
    worker_events, beat_events = _events(worker_log, worker_text), _events(beat_log, beat_text)
    assert any("ready" in str(e["message"]) for e in worker_events), worker_events[:5]
    assert any(str(e["logger"]).startswith("celery") for e in worker_events)
    # A loop task's lines name the Celery task and the loop they belong to.
    ran = [e for e in worker_events if e.get("event") == "loop.ran"]
    assert ran, worker_events[-5:]
    assert all(e.get("task_id") and str(e.get("task", "")).endswith(f"loop_{e['loop']}") for e in ran), ran
    assert any("Sending due task" in str(e["message"]) for e in beat_events), beat_events[:5]
