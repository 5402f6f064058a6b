"""The embedded run (`ailuro up`, SQLite, no services) runs the demo workflow with local pilots, and
the demo campaign gets as far as its planned failure (visit 1003's isr), for the operator to recover."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ailuro.server import ROOT, free_port
from tests.processes import stop_process_group


@pytest.mark.slow
def test_ailuro_up_runs_the_demo_workflow_to_the_end_with_local_pilots(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        # Without the suite's static folder: the run collects into its own data folder.
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "AILURO_STATIC_ROOT"}
    }
    env["AILURO_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailuro.cli", "up", "--port", str(free_port()), "--exit-after", "150"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    database = tmp_path / "ailuro.sqlite3"
    states: dict[str, int] = {}
    groups: dict[str, int] = {}
    failed: list[tuple[str, int]] = []
    try:
        deadline = time.monotonic() + 140
        while time.monotonic() < deadline:
            time.sleep(2)
            if not database.exists():
                continue
            try:
                with sqlite3.connect(database, timeout=5) as db:
                    states = dict(
                        db.execute(
                            "SELECT j.jobstatus, COUNT(*) FROM dispatcher_job j JOIN dispatcher_workflow w"
                            " ON w.id = j.workflow_id WHERE w.name = 'demo-step1' GROUP BY 1"
                        )
                    )
                    workers = dict(db.execute("SELECT status, COUNT(*) FROM harvester_worker GROUP BY 1"))
                    groups = dict(db.execute("SELECT status, COUNT(*) FROM campaigns_group GROUP BY 1"))
                    failed = list(
                        db.execute(
                            "SELECT name, transexitcode FROM dispatcher_job WHERE jobstatus = 'failed'"
                        )
                    )
            except sqlite3.OperationalError:
                continue  # tables not migrated yet
            if states == {"finished": 25} and groups.get("failed"):
                break
        assert states == {"finished": 25}, states
        assert sum(workers.values()) >= 1
        # The campaign's one planned failure, shown as a failed group waiting for a restart.
        assert groups.get("failed") == 1, groups
        assert [(name.split("_")[0], code) for name, code in failed] == [("isr", 65)], failed
    finally:
        stop_process_group(proc, signal.SIGINT)
