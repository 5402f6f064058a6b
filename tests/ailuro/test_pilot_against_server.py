"""`ailuro pilot` end to end against the real ailuro server (gunicorn on the test database).

Each test starts the server and real pilot processes; what is asserted is what the server stored.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ailuro.pilot.client import Spool
from dispatcher.models import Job, JobAttempt, PayloadLog, RetryRule
from dispatcher.retry import DEFAULT_RULES
from dispatcher.services import NewJob, job_transition
from harvester.services import CAP_MARKER
from tests.ailuro.server import AiluroServer, activated_jobs, pilot_process, pilot_token_file, run_pilot
from tests.factories import QueueFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
PY = sys.executable
DB_RULE = next(rule for rule in DEFAULT_RULES if rule["name"] == "database-connection-exe")


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiluroServer]:
    """One server for the module (starting gunicorn costs seconds); tests see it on the test DB."""
    srv = AiluroServer(tmp_path_factory.mktemp("server"), env={"AILURO_PAYLOAD_LOG_CAP": "4096"})
    srv.start()
    yield srv
    srv.stop()


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_pilot_runs_jobs_until_there_is_no_work(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="LOCAL_Q")
    jobs = activated_jobs(
        queue,
        [
            NewJob(name=f"j{i}", label="step", command=f"echo hello {i}; exit {3 if i == 2 else 0}")
            for i in range(3)
        ],
    )
    result = run_pilot(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot")
    assert result.returncode == 0, result.stderr
    states = {j.name: (j.jobstatus, j.transexitcode) for j in Job.objects.filter(pk__in=[j.pk for j in jobs])}
    assert states["j0"] == ("finished", 0)
    assert states["j1"] == ("finished", 0)
    assert states["j2"][1] == 3
    first = Job.objects.get(pk=jobs[0].pk)
    assert first.starttime is not None
    assert first.endtime is not None
    assert first.max_rss_kb is not None
    assert "".join(PayloadLog.objects.filter(job=first).values_list("text", flat=True)) == "hello 0\n"
    assert "no work for queue LOCAL_Q" in result.stderr


def test_memory_hog_fails_with_1212_and_its_measured_rss(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="HOG_Q")
    hog = (
        f'{PY} -c "import time\nheap = []\nfor _ in range(20):\n'
        f"    heap.append('x' * (40 * 2**20)); time.sleep(0.3)\""
    )
    [job] = activated_jobs(queue, [NewJob(name="hog", label="hog", command=hog, memory_mb=100)])
    result = run_pilot(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot")
    assert result.returncode == 0, result.stderr
    attempt = JobAttempt.objects.get(job_id=job.pk, attemptnr=1)
    assert attempt.piloterrorcode == 1212
    assert attempt.max_rss_kb is not None
    assert 100 * 1024 < attempt.max_rss_kb < 400 * 1024
    stopped_at = re.search(r"RSS (\d+) kB > 102400 kB", attempt.piloterrordiag)
    assert stopped_at
    assert 100 * 1024 < int(stopped_at[1]) <= attempt.max_rss_kb


def test_walltime_overrun_fails_with_1213(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="WALL_Q")
    [job] = activated_jobs(queue, [NewJob(name="slow", label="slow", command="sleep 60", walltime_s=1)])
    started = time.monotonic()
    result = run_pilot(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert JobAttempt.objects.get(job_id=job.pk, attemptnr=1).piloterrorcode == 1213


def test_a_job_killed_on_the_server_is_stopped_by_its_pilot(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="KILL_Q")
    marker = tmp_path / "still-running"
    [job] = activated_jobs(
        queue,
        [NewJob(name="victim", label="v", command=f"for i in $(seq 60); do touch {marker}; sleep 1; done")],
    )
    with pilot_process(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot") as pilot:
        wait_for(lambda: Job.objects.get(pk=job.pk).jobstatus == "running")
        job_transition(pandaid=job.pk, to="cancelled", cause="operator kill")
        _, stderr = pilot.communicate(timeout=30)
    assert "killing the payload" in stderr or "tobekilled" in stderr
    assert Job.objects.get(pk=job.pk).jobstatus == "cancelled"
    marker.unlink()
    time.sleep(1.5)
    assert not marker.exists(), "the payload kept running after the kill"


def test_sigterm_to_the_pilot_reports_the_job_preempted_1379(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="PREEMPT_Q")
    [job] = activated_jobs(queue, [NewJob(name="long", label="l", command="sleep 60")])
    with pilot_process(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot") as pilot:
        wait_for(lambda: Job.objects.get(pk=job.pk).jobstatus == "running")
        pilot.send_signal(signal.SIGTERM)
        _, stderr = pilot.communicate(timeout=30)
    assert pilot.returncode == 0, stderr
    assert JobAttempt.objects.get(job_id=job.pk, attemptnr=1).piloterrorcode == 1379


def spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("*.json"))


@contextlib.contextmanager
def server_back_at_the_end(server: AiluroServer) -> Iterator[None]:
    """The module's server is up again after the block, whatever the block did to it."""
    try:
        yield
    finally:
        if server.proc is None:
            server.start()


def test_a_pilot_rides_out_a_server_outage_and_delivers_its_report_once(
    server: AiluroServer, tmp_path: Path
) -> None:
    queue = QueueFactory(name="OUTAGE_Q")
    [job] = activated_jobs(queue, [NewJob(name="j", label="j", command="sleep 3; echo done")])
    token = pilot_token_file(tmp_path)
    with (
        server_back_at_the_end(server),
        pilot_process(server.url, queue.name, token, tmp_path / "pilot", "--retry-cap", "1") as pilot,
    ):
        wait_for(lambda: Job.objects.get(pk=job.pk).jobstatus == "running")
        server.stop()  # down while the payload runs: its final report cannot be delivered
        wait_for(lambda: len(spooled(tmp_path)) == 1)
        time.sleep(8)  # far longer than the ~7.5 s after which pilots used to give up
        assert pilot.poll() is None, "the pilot exited during the outage"
        assert len(spooled(tmp_path)) == 1
        assert Job.objects.get(pk=job.pk).jobstatus == "running"
        server.start()
        _, stderr = pilot.communicate(timeout=60)
    assert pilot.returncode == 0, stderr
    assert stderr.count("delivered 1 spooled report") == 1, stderr
    assert "no work for queue OUTAGE_Q" in stderr
    job.refresh_from_db()
    assert (job.jobstatus, job.attemptnr) == ("finished", 1)
    assert JobAttempt.objects.filter(job_id=job.pk).count() == 1
    assert spooled(tmp_path) == []


@pytest.mark.parametrize(
    ("extra", "stop"),
    [(("--retry-horizon", "4"), False), (("--stop-grace", "2"), True)],
    ids=["at-the-horizon", "after-sigterm"],
)
def test_a_pilot_gives_up_on_its_report_only_at_the_horizon_or_after_sigterm_and_says_so(
    server: AiluroServer, tmp_path: Path, extra: tuple[str, ...], stop: bool
) -> None:
    queue = QueueFactory(name="GIVEUP_Q")
    [job] = activated_jobs(queue, [NewJob(name="j", label="j", command="sleep 2")])
    token = pilot_token_file(tmp_path)
    with (
        server_back_at_the_end(server),
        pilot_process(server.url, queue.name, token, tmp_path / "pilot", "--retry-cap", "1", *extra) as pilot,
    ):
        wait_for(lambda: Job.objects.get(pk=job.pk).jobstatus == "running")
        server.stop()
        wait_for(lambda: len(spooled(tmp_path)) == 1)
        if stop:
            pilot.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = pilot.communicate(timeout=60)
        waited = time.monotonic() - started
    assert pilot.returncode == 5, stderr
    assert 1 < waited < 15
    assert (
        f"UNDELIVERED final report left in the spool: {spooled(tmp_path)[0]} (job {job.pk} attempt 1 finished)"
        in stderr
    )
    assert Job.objects.get(pk=job.pk).jobstatus == "running"


def test_a_report_stranded_by_a_dead_pilot_is_delivered_once_by_the_pilots_sharing_its_spool(
    server: AiluroServer, tmp_path: Path
) -> None:
    queue = QueueFactory(name="STRANDED_Q")
    [job] = activated_jobs(queue, [NewJob(name="j", label="j", command="sleep 2; echo done")])
    token = pilot_token_file(tmp_path)
    # The first pilot is killed during the outage: its report stays in the node's spool.
    with (
        server_back_at_the_end(server),
        pilot_process(server.url, queue.name, token, tmp_path / "dead", "--retry-cap", "1"),
    ):
        wait_for(lambda: Job.objects.get(pk=job.pk).jobstatus == "running")
        server.stop()
        wait_for(lambda: len(spooled(tmp_path)) == 1)
    assert Job.objects.get(pk=job.pk).jobstatus == "running"

    # Two pilots of the queue start on the node at once; one of them sends the report.
    with (
        pilot_process(server.url, queue.name, token, tmp_path / "p0") as first,
        pilot_process(server.url, queue.name, token, tmp_path / "p1") as second,
    ):
        logs = [first.communicate(timeout=60)[1], second.communicate(timeout=60)[1]]
    assert [first.returncode, second.returncode] == [0, 0], logs
    assert sum(log.count("delivered 1 spooled report") for log in logs) == 1, logs
    assert Job.objects.get(pk=job.pk).jobstatus == "finished"
    assert spooled(tmp_path) == []


def test_a_spooled_report_the_server_no_longer_wants_leaves_the_spool(
    server: AiluroServer, tmp_path: Path
) -> None:
    queue = QueueFactory(name="FENCED_Q")
    [job] = activated_jobs(queue, [NewJob(name="j", label="j", command="true")])
    stale = {"job_id": job.pk, "attempt_nr": 7, "lease": "0" * 32, "job_status": "finished"}
    spool = Spool(tmp_path / "spool", url=server.url, queue=queue.name)
    spool.prepare()
    spool.put("update_job", stale)
    result = run_pilot(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot")
    assert result.returncode == 0, result.stderr
    assert "no longer wanted by the server" in result.stderr
    assert spooled(tmp_path) == []
    assert Job.objects.get(pk=job.pk).jobstatus == "finished"  # the real job ran normally
    assert JobAttempt.objects.filter(job_id=job.pk).count() == 1


def test_a_python_traceback_reaches_the_server_as_the_exe_diag(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="TRACEBACK_Q")
    RetryRule.objects.get_or_create(
        name="database-connection-exe",
        defaults={k: v for k, v in DB_RULE.items() if k not in {"name", "description"}},
    )
    payload = tmp_path / "payload.py"
    payload.write_text(
        "class OperationalError(Exception):\n"
        "    pass\n"
        "OperationalError.__module__ = 'sqlalchemy.exc'\n"
        "print('connecting to the butler registry', flush=True)\n"
        "raise OperationalError('(psycopg2.OperationalError) connection to server at \"db\" (10.0.0.5), '\n"
        "                       'port 5432 failed: Connection refused\\n\\tIs the server running on that host?')\n"
    )
    [job] = activated_jobs(queue, [NewJob(name="tb", label="tb", command=f"{PY} {payload}")])
    result = run_pilot(
        server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot", "--max-jobs", "1"
    )
    assert result.returncode == 0, result.stderr
    attempt = JobAttempt.objects.get(job_id=job.pk, attemptnr=1)
    assert attempt.exeerrordiag == (
        'sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "db" '
        "(10.0.0.5), port 5432 failed: Connection refused"
    )
    assert (attempt.exeerrorcode, attempt.transexitcode, attempt.piloterrorcode) == (1, 1, 0)
    # The server's rule for database connection errors now sees them and retries the job.
    assert attempt.retry_action == "retry"
    assert "database-connection-exe" in attempt.retry_reason
    assert Job.objects.get(pk=job.pk).attemptnr == 2


def test_a_payload_killed_by_sigterm_is_reported_with_exit_143_and_1201(
    server: AiluroServer, tmp_path: Path
) -> None:
    queue = QueueFactory(name="SIGTERM_Q")
    [job] = activated_jobs(queue, [NewJob(name="t", label="t", command="echo working; kill -TERM $$")])
    result = run_pilot(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot")
    assert result.returncode == 0, result.stderr
    attempt = JobAttempt.objects.get(job_id=job.pk, attemptnr=1)
    assert (attempt.transexitcode, attempt.piloterrorcode, attempt.exeerrorcode) == (143, 1201, 143)
    assert attempt.exeerrordiag == "payload killed by SIGTERM (signal 15, exit 143): working"


def test_payload_output_is_stored_in_order_and_capped(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="LOG_Q")
    command = f"{PY} -c \"import time\nfor i in range(1000):\n    print(f'line {{i:04d}}', flush=True)\n    time.sleep(0.002)\""
    [job] = activated_jobs(queue, [NewJob(name="chatty", label="c", command=command)])
    result = run_pilot(server.url, queue.name, pilot_token_file(tmp_path), tmp_path / "pilot")
    assert result.returncode == 0, result.stderr
    chunks = list(
        PayloadLog.objects.filter(job_id=job.pk).order_by("sequence").values_list("sequence", "text")
    )
    assert [seq for seq, _ in chunks] == list(range(1, len(chunks) + 1))
    text = "".join(t for _, t in chunks)
    assert len(text.encode()) <= 4096  # the server was started with a 4 KiB cap
    assert text.startswith("line 0000\nline 0001\n")
    assert text.endswith(CAP_MARKER.format(cap=4096))
    assert Job.objects.get(pk=job.pk).jobstatus == "finished"


def test_max_jobs_and_lifetime_bound_what_a_pilot_takes(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="BOUND_Q")
    jobs = activated_jobs(queue, [NewJob(name=f"b{i}", label="b", command="sleep 1") for i in range(4)])
    token = pilot_token_file(tmp_path)
    two = run_pilot(server.url, queue.name, token, tmp_path / "p1", "--max-jobs", "2")
    assert "max jobs (2) reached" in two.stderr
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="finished").count() == 2
    # A lifetime shorter than one job: the pilot finishes the job it took, then takes no other.
    one = run_pilot(server.url, queue.name, token, tmp_path / "p2", "--lifetime", "0.5")
    assert one.returncode == 0, one.stderr
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="finished").count() == 3
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], jobstatus="activated").count() == 1


def test_a_pilot_without_a_valid_token_stops_at_once_saying_why(server: AiluroServer, tmp_path: Path) -> None:
    queue = QueueFactory(name="AUTH_Q")
    [job] = activated_jobs(queue, [NewJob(name="a", label="a", command="true")])
    bad = tmp_path / "bad-token"
    bad.write_text("ail_not-a-real-token")
    result = run_pilot(server.url, queue.name, bad, tmp_path / "pilot", timeout=30)
    assert result.returncode == 3
    assert "server refused the pilot: HTTP 401" in result.stderr
    assert Job.objects.get(pk=job.pk).jobstatus == "activated"
