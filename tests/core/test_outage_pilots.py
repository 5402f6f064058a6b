"""Pilots running a 200-job workflow through gunicorn while PostgreSQL is stopped for 30 s and started
again: every probe during the outage answers 503 with Retry-After, no pilot exits, and afterwards
every job finished exactly once — in the database and by the jobs' own output — with nothing left
in the pilots' spool.

Everything is the production setup on a private PostgreSQL cluster (tests/pgcluster.py): gunicorn
with 2 workers, the loops of `manage.py run_loops` (brokerage makes the jobs dispatchable, the
watcher runs with its production timeouts), and `ailuro pilot` processes with their default retry
policy sharing one spool, as the pilots of one node do. The machine's shared cluster is not touched.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from core.views import READYZ_RETRY_AFTER_S
from tests.ailuro.server import ROOT, AiluroServer
from tests.outage import Answer, ask, child_env, manage
from tests.pgcluster import PrivateCluster
from tests.processes import stop_process_group

pytestmark = pytest.mark.slow

DB = "ailuro_outage_pilots"
QUEUE = "OUTAGE_PILOTS"
JOBS = 200
PILOTS = 6
OUTAGE_S = 30.0
RETRY_AFTER = "5"  # the server's default AILURO_RETRY_AFTER_S
READYZ_RETRY_AFTER = str(READYZ_RETRY_AFTER_S)  # /readyz tells load balancers when to look again

QUEUES_YAML = f"""
resource_types:
  - {{name: SCORE, min_cores: 1, max_cores: 1}}
sites:
  - {{name: OUTAGE_SITE, region: EU, tier: 1}}
queues:
  - {{name: {QUEUE}, site: OUTAGE_SITE, max_rss_mb: 4000, max_cores: 1, resource_types: [SCORE]}}
"""


def workflow_yaml(out: Path) -> str:
    """JOBS jobs, each appending one line (its pandaid and attempt) to a file of its own, then
    sleeping a little, so that some are in flight when the database goes away."""
    command = f'echo "$PANDAID $AILURO_ATTEMPT" >> {out}/n{{n}}.out; sleep 0.5'
    return (
        "name: outage-pilots\n"
        f"dimensions: {{n: {{range: [0, {JOBS}]}}}}\n"
        "labels:\n"
        f"  step: {{command: '{command}', over: [n]}}\n"
    )


@dataclass
class Probe:
    name: str
    call: Callable[[], Answer]


@dataclass
class Record:
    name: str
    sent: float  # time.monotonic() when the request went out
    status: int
    retry_after: str | None
    body: str


@dataclass
class Prober:
    """Polls every probe in turn from a thread and records every answer."""

    probes: list[Probe]
    records: list[Record] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for probe in self.probes:
                sent = time.monotonic()
                answer = probe.call()
                self.records.append(
                    Record(
                        probe.name, sent, answer.status, answer.headers.get("Retry-After"), answer.text[:300]
                    )
                )
            time.sleep(0.2)


@dataclass
class Deployment:
    cluster: PrivateCluster
    url: str  # the database's
    server: AiluroServer
    tmp: Path
    pilot_token: str
    user_token: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env(DATABASE_URL=self.url, CELERY_BROKER_URL="memory://", AILURO_LOG_LEVEL="WARNING"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    pg = PrivateCluster()
    d: Deployment | None = None
    try:
        pg.start()
        pg.createdb(DB)
        url = pg.url(DB)
        manage(url, "migrate", "--noinput", "-v", "0")
        (tmp_path / "queues.yaml").write_text(QUEUES_YAML)
        manage(url, "load_queues", str(tmp_path / "queues.yaml"))
        pilot_token = manage(url, "create_token", "--user", "pilots", "--role", "pilot").splitlines()[-1]
        user_token = manage(url, "create_token", "--user", "alice", "--role", "user").splitlines()[-1]
        server = AiluroServer(
            tmp_path, env={"DATABASE_URL": url, "CELERY_BROKER_URL": "memory://"}, workers=2
        )
        d = Deployment(pg, url, server, tmp_path, pilot_token, user_token)
        server.start()
        yield d
    finally:
        if d is not None:
            for proc in d.processes:
                stop_process_group(proc, timeout=10)
            d.server.stop()
        pg.destroy()


def pilot_argv(d: Deployment, n: int) -> list[str]:
    """`ailuro pilot` with its production retry policy, asking for work for the whole test."""
    token = d.tmp / "pilot-token"
    token.write_text(d.pilot_token)
    return [
        sys.executable,
        "-m",
        "ailuro.cli",
        "pilot",
        "--url",
        d.server.url,
        "--queue",
        QUEUE,
        "--token-file",
        str(token),
        "--workdir",
        str(d.tmp / f"pilot{n}"),
        "--spool",
        str(d.tmp / "spool"),
        "--idle-wait",
        "3600",
    ]


def wait_for(what: str, predicate: Callable[[], bool], within_s: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < within_s, f"timed out after {within_s:.0f} s waiting for {what}"
        time.sleep(0.5)
    return time.monotonic() - started


def test_pilots_ride_out_a_database_outage_and_run_every_job_exactly_once(deployment: Deployment) -> None:
    d = deployment
    out = d.tmp / "out"
    out.mkdir()
    submitted = ask(
        d.server.url,
        "/api/v1/workflows/",
        body=workflow_yaml(out).encode(),
        token=d.user_token,
        headers={"Content-Type": "application/yaml"},
    )
    assert submitted.status == 201, submitted.text
    workflow = submitted.json()["id"]
    loops = d.start(
        "loops",
        [
            sys.executable,
            "manage.py",
            "run_loops",
            "--skip",
            "provisioner",
            "campaigns",
            "janitor",
            "--sleep",
            "0.5",
        ],
    )
    pilots = [d.start(f"pilot{n}", pilot_argv(d, n)) for n in range(PILOTS)]

    def ran() -> int:
        return len(list(out.glob("n*.out")))

    wait_for("the first jobs to run", lambda: ran() >= JOBS // 5, within_s=90)

    base = d.server.url
    probes = [
        Probe(
            "getJob",
            lambda: ask(
                base, "/server/panda/getJob", form={"siteName": "NO_SUCH_QUEUE"}, token=d.pilot_token
            ),
        ),
        Probe(
            "updateJob",
            lambda: ask(
                base,
                "/server/panda/updateJob",
                form={"jobId": "424242", "state": "running", "attemptNr": "0"},
                token=d.pilot_token,
            ),
        ),
        Probe(
            "acquire_jobs",
            lambda: ask(
                base, "/api/v1/pilot/acquire_jobs", form={"site_name": "NO_SUCH_QUEUE"}, token=d.pilot_token
            ),
        ),
        Probe(
            "update_job",
            lambda: ask(
                base,
                "/api/v1/pilot/update_job",
                form={"job_id": "424242", "attempt_nr": "1", "job_status": "running"},
                token=d.pilot_token,
            ),
        ),
        Probe("REST workflow", lambda: ask(base, f"/api/v1/workflows/{workflow}/", token=d.user_token)),
        Probe("monitor jobs", lambda: ask(base, "/jobs/")),
        Probe("readyz", lambda: ask(base, "/readyz")),
    ]
    prober = Prober(probes)
    thread = threading.Thread(target=prober.run, daemon=True)
    thread.start()
    before_outage = ran()
    try:
        d.cluster.stop()  # returns once the database has shut down
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:
            time.sleep(1)
            alive = [p.poll() is None for p in pilots]
            assert all(alive), f"pilot(s) exited during the outage: {alive}"
        up_at = time.monotonic()
    finally:
        if not d.cluster.running():
            d.cluster.start()
    # No allowance for a transition: pg_ctl returns once the database is down, and from then on the
    # first use of each server thread's connection fails and is answered 503 like every later one.
    during = [r for r in prober.records if down_at <= r.sent < up_at]
    wait_for("the server to answer again", lambda: ask(base, "/readyz").status == 200, within_s=30)
    prober.stop.set()
    thread.join(timeout=60)

    # During the outage: every probe of every interface answered 503 with Retry-After.
    assert {r.name for r in during} == {p.name for p in probes}, "every probe ran during the outage"
    wrong = [
        r
        for r in during
        if r.status != 503 or r.retry_after != (READYZ_RETRY_AFTER if r.name == "readyz" else RETRY_AFTER)
    ]
    assert not wrong, wrong[:10]
    assert len(during) >= 3 * len(probes)
    # Jobs were in flight and kept running (the pilots ran payloads while the database was away).
    assert before_outage < JOBS

    def finished() -> int:
        [(count,)] = d.query(
            f"SELECT count(*) FROM dispatcher_job WHERE workflow_id = {workflow} AND jobstatus = 'finished'"
        )  # noqa: S608
        return int(count)  # type: ignore[call-overload]

    wait_for(f"all {JOBS} jobs to finish", lambda: finished() == JOBS, within_s=150)
    spool = d.tmp / "spool"
    wait_for("the spool to empty", lambda: not list(spool.iterdir()), within_s=30)

    # No pilot exited, during the outage or after; each stops cleanly when told to.
    assert [p.poll() for p in pilots] == [None] * PILOTS
    for proc in pilots:
        stop_process_group(proc, timeout=60)
    logs = {n: (d.tmp / f"pilot{n}.log").read_text() for n in range(PILOTS)}
    assert [p.returncode for p in pilots] == [0] * PILOTS, logs
    assert loops.poll() is None

    # Every job finished exactly once: one attempt each, in the database …
    rows = d.query(
        "SELECT j.pandaid, j.jobstatus, j.attemptnr, count(a.id) FROM dispatcher_job j "  # noqa: S608
        f"LEFT JOIN dispatcher_jobattempt a ON a.job_id = j.pandaid WHERE j.workflow_id = {workflow} "
        "GROUP BY j.pandaid, j.jobstatus, j.attemptnr"
    )
    assert len(rows) == JOBS
    assert {(status, attempt, attempts) for _, status, attempt, attempts in rows} == {("finished", 1, 1)}
    # … and by the payloads' own output: one file per job, one line in it, from attempt 1.
    outputs = sorted(out.glob("n*.out"))
    assert len(outputs) == JOBS
    lines = {path.name: path.read_text().splitlines() for path in outputs}
    assert {name: len(text) for name, text in lines.items() if len(text) != 1} == {}
    pandaids = {int(text[0].split()[0]) for text in lines.values()}
    assert pandaids == {int(str(row[0])) for row in rows}
    assert {text[0].split()[1] for text in lines.values()} == {"1"}
    # Nothing left in the spool, and the outage really hit the pilots.
    assert list(spool.iterdir()) == []
    log = "".join(logs.values())
    assert "HTTP 503" in log
    # Payloads that ended during the outage had their final reports spooled, sent once it was over.
    assert "not delivered yet; it waits in" in log
    assert "spooled report(s)" in log
    # The server and the loops logged the outage as warnings, one line each, never a traceback.
    server_log = (d.tmp / "server.log").read_text()
    assert "Traceback" not in server_log, server_log[-3000:]
    assert "database unavailable" in server_log
    stop_process_group(loops, timeout=30)
    loops_log = (d.tmp / "loops.log").read_text()
    assert "Traceback" not in loops_log, loops_log[-3000:]
    assert '"severity": "ERROR"' not in loops_log, loops_log[-3000:]
    assert "loop brokerage: the database is unavailable (OperationalError)" in loops_log
