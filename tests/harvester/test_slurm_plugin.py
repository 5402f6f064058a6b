"""The Slurm plugin's pure parts: state mapping, exit codes, output parsing, the job script."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.plugins.base import WorkerSpec
from harvester.plugins.slurm import (
    job_script,
    parse_sacct,
    parse_squeue,
    slurm_exit_code,
    slurm_state_to_worker,
)


@pytest.mark.parametrize(
    ("state", "worker"),
    [
        ("PENDING", "submitted"),
        ("CONFIGURING", "submitted"),
        ("REQUEUED", "submitted"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("SUSPENDED", "running"),
        ("COMPLETED", "finished"),
        ("CANCELLED", "cancelled"),
        ("CANCELLED by 0", "cancelled"),
        ("CANCELLED+", "cancelled"),
        ("FAILED", "failed"),
        ("TIMEOUT", "failed"),
        ("NODE_FAIL", "failed"),
        ("PREEMPTED", "failed"),
        ("OUT_OF_MEMORY", "failed"),
        ("OUT_OF_ME+", "failed"),
        ("BOOT_FAIL", "failed"),
        ("SOMETHING_NEW", "failed"),
    ],
)
def test_slurm_states_map_onto_worker_states(state: str, worker: str) -> None:
    assert slurm_state_to_worker(state) == worker


@pytest.mark.parametrize(
    ("text", "code"), [("0:0", 0), ("3:0", 3), ("0:15", 143), ("0:9", 137), ("1:15", 1), ("", None)]
)
def test_exit_codes_combine_code_and_signal(text: str, code: int | None) -> None:
    assert slurm_exit_code(text) == code


def test_squeue_output_is_parsed_with_node_and_reason() -> None:
    out = "12|RUNNING|vm|None\n13|PENDING|(null)|Resources\n14|COMPLETED|vm|None\n"
    states = parse_squeue(out)
    assert states["12"].status == "running"
    assert states["12"].node == "vm"
    assert states["13"].status == "submitted"
    assert states["13"].node == ""
    assert states["13"].diag == "Resources"
    assert states["14"].status == "finished"


def test_sacct_output_skips_steps_and_the_last_record_wins() -> None:
    out = (
        "20|FAILED|3:0|vm\n"
        "20.batch|FAILED|3:0|vm\n"
        "21|NODE_FAIL|0:0|vm\n"
        "21|COMPLETED|0:0|vm\n"  # requeued, then completed
        "22|CANCELLED by 0|0:0|None assigned\n"
    )
    states = parse_sacct(out)
    assert set(states) == {"20", "21", "22"}
    assert (states["20"].status, states["20"].exit_code) == ("failed", 3)
    assert "FAILED" in states["20"].diag
    assert (states["21"].status, states["21"].exit_code) == ("finished", 0)
    assert states["22"].status == "cancelled"
    assert states["22"].node == ""


def test_job_script_carries_the_queue_settings_and_execs_the_pilot(tmp_path: Path) -> None:
    spec = WorkerSpec(
        worker_id=7,
        queue="SLAC_Rubin",
        argv=["/usr/bin/python3", "-m", "ailuro.cli", "pilot", "--queue", "SLAC Rubin"],
        workdir=tmp_path,
        env={"A": "b c"},
        cores=2,
    )
    script = job_script(
        spec,
        {"partition": "rubin", "account": "lsst", "memory_mb": 4000, "walltime_s": 3600, "qos": "normal"},
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in [
        "#SBATCH --partition=rubin",
        "#SBATCH --account=lsst",
        "#SBATCH --qos=normal",
        "#SBATCH --mem=4000M",
        "#SBATCH --time=60",
        "#SBATCH --cpus-per-task=2",
        f"#SBATCH --output={tmp_path}/slurm-%j.out",
        "export A='b c'",
        "export AILURO_WORKER_ID=7",
    ]:
        assert expected in lines
    assert lines[-1] == "exec /usr/bin/python3 -m ailuro.cli pilot --queue 'SLAC Rubin'"
    assert not any(line.startswith("#SBATCH --partition") for line in job_script(spec, {}).splitlines())
