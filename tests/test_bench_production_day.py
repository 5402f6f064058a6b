"""bench/production_day.py end to end at a tiny scale: it seeds its own scratch database, starts
gunicorn, a Celery worker and beat, drives pilots, submitters and readers for one short phase,
drains, and prints a report with every field, whose reconciliation passes (every submitted job in
one final state, attempt rows = dispatches, nothing dispatched or ended twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres")
        or not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"),
        reason="needs PostgreSQL and a Redis broker",
    ),
]

PHASE_FIELDS = {
    "phase",
    "multiplier",
    "wall_s",
    "offered",
    "cpu",
    "db_growth",
    "postgres_io",
    "loadavg",
    "pilot_calls",
    "pilot_call_errors",
    "client_late_p99_ms",
    "monitor",
    "rollup_lag_s",
    "loops",
    "postgres_statements",
    "missed",
    "meets_targets",
}

# One 20 s phase on 2,000 seeded jobs, a handful of pilots and readers, in the layout deployed:
# the pilot calls served by the pilot lane (granian), everything else by gunicorn.
TINY = (
    "--jobs-existing 2000 --duration 20 --phases 1 --rate 6 --heartbeats 20 --runtime 4 --drain 90"
    " --workflow-width 4 --client-procs 1 --client-threads 4 --readers 2 --workers 1 --threads 4 --celery-concurrency 1"
    " --server granian --pilot-lane --monitor-workers 1 --monitor-threads 2 --monitor-server gunicorn"
)


def _pg() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}"


@pytest.fixture
def scratch() -> Iterator[str]:
    name = f"ailuro_bench_prodday_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(f"{_pg()}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_tiny_production_day_reports_every_field_and_reconciles(scratch: str, tmp_path: Path) -> None:
    out = tmp_path / "day.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/production_day.py",
            *["--pg", _pg(), "--db", scratch, "--out", str(out)],
            *TINY.split(),
        ],
        cwd=ROOT,
        env={**os.environ, "AILURO_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == json.loads(out.read_text())
    assert {
        "machine",
        "existing_jobs",
        "phases",
        "limit",
        "drain_s",
        "monitor_errors",
        "reconciliation",
    } <= set(report)
    assert report["monitor_errors"]["errors"] == 0, report["monitor_errors"]
    assert report["phases"][0]["pilot_call_errors"] == 0
    assert report["existing_jobs"]["jobs"] == 2000
    assert report["warmup_s"] == 6.0  # 1.5 × the runtime, unmeasured, before the phase
    assert report["machine"]["core_loop_ms"] > 0 and report["machine"]["core_loop_ms_at_end"] > 0
    assert report["server"] == (
        "granian, 1 workers x 4 threads (the pilot lane); monitor lane gunicorn, 1 workers x 2 threads"
    )
    (phase,) = report["phases"]
    assert set(phase) >= PHASE_FIELDS
    assert {"dispatch", "heartbeat", "final", "submit"} <= set(phase["pilot_calls"])
    for stats in phase["pilot_calls"].values():
        assert {"calls", "per_s", "p50_ms", "p99_ms"} <= set(stats)
    assert phase["pilot_calls"]["dispatch"]["calls"] > 0
    assert phase["pilot_calls"]["submit"]["calls"] > 0
    assert {"web", "celery_worker", "celery_beat", "pilots", "readers", "postgres"} <= set(
        phase["cpu"]["cpu_s"]
    )
    assert phase["cpu"]["cpu_s"]["web"] > 0
    # The pages and the submissions were served by the monitor lane (the pilot lane answers
    # nothing else), the pilot calls by the first server: PostgreSQL's CPU split by whose
    # statements it ran shows both lanes' backends at work.
    assert phase["cpu"]["cpu_s"]["monitor_web"] > 0
    assert phase["cpu"]["postgres_cores_by_client"]["web"] > 0
    assert phase["cpu"]["postgres_cores_by_client"]["monitor"] > 0
    assert phase["monitor"], "the readers measured no page"
    assert all("p95_ms" in page for page in phase["monitor"].values())
    assert "brokerage" in phase["loops"]
    brokerage = phase["loops"]["brokerage"]
    assert 0 <= brokerage["max_lag_at_s"] <= 20 + 5 and brokerage["late_s"] % 5 == 0
    statements = phase["postgres_statements"]
    assert statements["samples"] > 0
    # The pilots' calls, pages and loops were running in PostgreSQL at some of the samples.
    assert any("dispatcher_" in s["statement"] for s in statements["top"]), statements
    assert all(0 < s["backends"] <= statements["active_backends_mean"] for s in statements["top"])
    assert phase["db_growth"]["jobs_submitted"] > 0
    assert phase["postgres_io"]["wal_mb_per_s"] > 0
    assert 0 < phase["postgres_io"]["shared_buffers_hit_ratio"] <= 1
    reconciliation = report["reconciliation"]
    assert reconciliation["passes"], reconciliation
    assert reconciliation["jobs"] > 0
    assert reconciliation["dispatches"] >= reconciliation["jobs"] - reconciliation["pruned"]
