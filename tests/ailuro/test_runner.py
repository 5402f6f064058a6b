"""run_payload: limits, kills, measurements and output chunks — the pilot's core, without a server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from ailuro.pilot import runner
from ailuro.pilot.monitor import sample_session
from ailuro.pilot.runner import Limits, payload_argv, run_payload
from ailuro.protocol import (
    PILOT_ERROR_KILLED_BY_SERVER,
    PILOT_ERROR_MEMORY,
    PILOT_ERROR_PREEMPTED,
    PILOT_ERROR_WALLTIME,
)

PY = sys.executable


def test_exit_code_timings_and_cpu_are_reported(tmp_path: Path) -> None:
    result = run_payload(
        f"{PY} -c 'import time; t=time.process_time()\nwhile time.process_time()-t < 0.3: pass'; exit 3",
        workdir=tmp_path / "w",
        sample_s=0.1,
    )
    assert result.exit_code == 3
    assert result.pilot_error_code == 0
    assert result.cpu_s >= 0.25
    assert result.wall_s >= 0.3
    assert result.ended_at >= result.started_at + 0.3
    assert result.max_rss_kb > 1000


HOG = (
    f'{PY} -c "import time\nheap = []\nfor _ in range(20):\n'
    f"    heap.append('x' * (40 * 2**20)); time.sleep(0.3)\""
)


def test_memory_hog_is_killed_with_1212_and_its_measured_rss(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_payload(HOG, workdir=tmp_path / "w", limits=Limits(memory_kb=100 * 1024), sample_s=0.2)
    assert time.monotonic() - started < 20
    assert result.pilot_error_code == PILOT_ERROR_MEMORY
    match = re.search(r"RSS (\d+) kB > 102400 kB", result.pilot_error_diag)
    assert match
    # The peak reported is at least the RSS that triggered the stop.
    assert 100 * 1024 < int(match[1]) <= result.max_rss_kb
    # Grows 40 MB every 0.3 s: stopped soon after it passed 100 MB, long before its 800 MB.
    assert result.max_rss_kb < 400 * 1024
    assert result.exit_code == 128 + 15  # SIGTERM ended it


def test_walltime_is_enforced_with_1213(tmp_path: Path) -> None:
    result = run_payload("sleep 60", workdir=tmp_path / "w", limits=Limits(walltime_s=1), sample_s=0.2)
    assert result.pilot_error_code == PILOT_ERROR_WALLTIME
    assert 1 <= result.wall_s < 8


def test_server_kill_from_a_heartbeat_stops_the_payload_with_1144(tmp_path: Path) -> None:
    beats: list[float] = []

    def heartbeat(sample: runner.Sample, wall_s: float) -> bool:
        beats.append(wall_s)
        return len(beats) >= 2

    result = run_payload(
        "sleep 60", workdir=tmp_path / "w", heartbeat=heartbeat, heartbeat_s=0.3, sample_s=0.1
    )
    assert result.pilot_error_code == PILOT_ERROR_KILLED_BY_SERVER
    assert len(beats) == 2
    assert result.wall_s < 10


def test_preemption_stops_the_payload_with_1379(tmp_path: Path) -> None:
    flag = threading.Event()
    threading.Timer(0.5, flag.set).start()
    result = run_payload("sleep 60", workdir=tmp_path / "w", preempted=flag.is_set, sample_s=0.1)
    assert result.pilot_error_code == PILOT_ERROR_PREEMPTED
    assert result.wall_s < 10


def test_kill_reaches_grandchildren_that_ignore_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    command = f"(trap '' TERM; sleep 60 & echo $! > {pidfile}; wait) & wait"
    result = run_payload(command, workdir=tmp_path / "w", limits=Limits(walltime_s=0.5), sample_s=0.1)
    assert result.pilot_error_code == PILOT_ERROR_WALLTIME
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_output_is_streamed_in_bounded_ordered_chunks(tmp_path: Path) -> None:
    chunks: list[tuple[int, str]] = []
    command = f"{PY} -c \"import sys\nfor i in range(5000): print(f'line {{i:05d}} ' + 'é' * 10)\""
    result = run_payload(
        command, workdir=tmp_path / "w", log_sink=lambda seq, text: chunks.append((seq, text))
    )
    assert result.exit_code == 0
    assert [seq for seq, _ in chunks] == list(range(1, len(chunks) + 1))
    assert len(chunks) > 3
    assert all(len(text.encode()) <= runner.LOG_CHUNK_BYTES for _, text in chunks)
    text = "".join(t for _, t in chunks)
    lines = text.splitlines()
    assert lines[0].startswith("line 00000 ")
    assert lines[-1].startswith("line 04999 ")
    assert len(lines) == 5000
    assert "\ufffd" not in text  # cut at UTF-8 boundaries
    assert (tmp_path / "w" / "payload.out").read_text() == text
    assert result.log_chunks == len(chunks)


def test_payload_runs_in_its_work_dir_with_its_environment_and_own_session(tmp_path: Path) -> None:
    result = run_payload(
        'pwd > where; echo "$MYVAR" >> where; ps -o sid= -p $$ >> where',
        workdir=tmp_path / "job",
        env={"PATH": os.environ["PATH"], "MYVAR": "hello"},
    )
    assert result.exit_code == 0
    where, var, sid = (tmp_path / "job" / "where").read_text().split()
    assert where == str(tmp_path / "job")
    assert var == "hello"
    assert int(sid) != os.getsid(0)


def test_session_sampler_sums_rss_over_the_tree(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen(
        [
            "/bin/bash",
            "-c",
            f"{PY} -c \"s='x'*(50*2**20); import time; time.sleep(30)\" & "
            f"{PY} -c \"s='x'*(50*2**20); import time; time.sleep(30)\" & wait",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        sample = sample_session(proc.pid)
        while sample.rss_kb < 100 * 1024 and time.monotonic() < deadline:
            time.sleep(0.1)
            sample = sample_session(proc.pid)
        assert sample.nprocs >= 3
        assert sample.rss_kb >= 100 * 1024
        assert 0 < sample.pss_kb <= sample.rss_kb + 1024
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_container_jobs_run_through_the_runtime_when_one_exists(tmp_path: Path) -> None:
    wd = tmp_path / "w"
    assert payload_argv("echo hi", workdir=wd) == ["/bin/bash", "-c", "echo hi"]
    assert payload_argv("echo hi", workdir=wd, image="alma9", runtime=None) == ["/bin/bash", "-c", "echo hi"]
    argv = payload_argv("echo hi", workdir=wd, image="alma9", runtime="podman")
    assert argv[:3] == ["podman", "run", "--rm"]
    assert "alma9" in argv
    assert argv[-1] == "echo hi"
    assert f"{wd}:{wd}" in argv
    argv = payload_argv("echo hi", workdir=wd, image="alma9", runtime="apptainer")
    assert argv[:2] == ["apptainer", "exec"]
    assert "docker://alma9" in argv


def test_the_end_of_the_output_is_kept_for_the_diagnosis(tmp_path: Path) -> None:
    command = f"{PY} -c \"print('x' * 200_000); raise KeyError('flux')\""
    result = run_payload(command, workdir=tmp_path / "w", sample_s=0.1)
    assert result.exit_code == 1
    assert len(result.tail) == runner.TAIL_BYTES
    assert not result.tail_complete
    assert result.tail.endswith(b"KeyError: 'flux'\n")


def test_output_keeps_flowing_when_its_copy_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "w" / "payload.out").mkdir(parents=True)  # the copy cannot be opened
    chunks: list[str] = []
    command = f"{PY} -c \"import sys\nfor i in range(20000): print('line', i)\""
    result = run_payload(command, workdir=tmp_path / "w", log_sink=lambda seq, text: chunks.append(text))
    assert result.exit_code == 0  # did not block on a full pipe
    assert "".join(chunks).splitlines()[-1] == "line 19999"
    assert "copy_error" in result.extra
    assert result.tail.endswith(b"line 19999\n")


def test_a_payload_killed_by_sigkill_exits_137(tmp_path: Path) -> None:
    result = run_payload("echo before; kill -9 $$", workdir=tmp_path / "w", sample_s=0.1)
    assert result.exit_code == 137
    assert result.pilot_error_code == 0
    assert result.tail == b"before\n"


def test_a_short_spike_between_samples_is_in_the_peak_rss(tmp_path: Path) -> None:
    # In a fresh process: the kernel's peak covers every child a process reaped, so an earlier,
    # bigger child of this test process would hide the payload's.
    spike = f"{PY} -c \"import time; time.sleep(0.2); s = bytearray(150 * 2**20); s[::4096] = b'x' * len(s[::4096])\""
    code = (
        "import json, pathlib\n"
        "from ailuro.pilot.runner import run_payload\n"
        f"r = run_payload({spike!r}, workdir=pathlib.Path({str(tmp_path / 'w')!r}), sample_s=5)\n"
        "print(json.dumps({'rss': r.max_rss_kb, 'samples': r.samples, 'exit': r.exit_code}))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout)
    assert result["exit"] == 0
    assert result["samples"] <= 1  # sampled once, early, before the spike
    assert result["rss"] >= 150 * 1024
