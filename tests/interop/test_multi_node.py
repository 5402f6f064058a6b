"""Several machines on one host: two web instances (gunicorn, two workers each) behind nginx, two
Celery workers and one beat, on the test PostgreSQL and the Redis broker, the instances sharing one
Redis cache (AILURO_CACHE_URL) and trusting nginx's X-Forwarded-For (AILURO_TRUSTED_PROXIES).

`test_pilots_ride_out_a_web_instance_killed_mid_run`: four real `ailuro pilot` processes with one
spool run a workflow of short jobs through nginx; once a third of the jobs finished, one instance's
whole process group (gunicorn master and workers) is frozen for 2 s (SIGSTOP, so pilot calls are
certainly inside it) and then SIGKILLed with those requests in flight. nginx
sends new connections to the other instance (a refused connect is retried on the next upstream even
for a POST: nothing was sent), answers 502 for the requests that were inside the dead instance (a
POST that reached an upstream is never replayed by nginx: `proxy_next_upstream` without
`non_idempotent`), and the pilots retry those themselves.

What "no job run twice" means here. The pilot protocol is PanDA's: `acquire_jobs` is a
non-idempotent POST that moves a job `activated → sent` and commits before the reply is written.
When the instance dies between that commit and the reply reaching the pilot, the pilot never learns
of the job: it asks again and gets another one, and the lost one stays `sent` until the watcher
fails the attempt after AILURO_SENT_TIMEOUT (jobdispatchererrorcode 102, as PanDA's Watcher does)
and the retrier gives the job a second attempt, which a pilot then runs. That job then has two
attempt rows, but its payload ran once: the first attempt never reached a pilot. Whether the kill
lands in that window is chance, so the test also loses one dispatch reply on purpose, through
nginx, before the pilots start: an `acquire_jobs` whose reply nobody acts on is, to the server, the
same as one whose reply died with the instance; that job must come back through the watcher
and run exactly once. (The seeded retry rule `sent-no-reply` waits 60 s before the retry; the test
shortens its backoff to 2 s for wall time.) So the test asserts, per job:

* the payload ran exactly once: the job's own output file (each payload appends its name to it)
  has exactly one line;
* exactly one attempt ran the payload (the finished one, with a start time), and every other
  attempt is a send timeout that never started (no start time, code 102) — in a run where no
  reply was lost that means exactly one attempt row;
* the job is finished (no final report lost), the shared spool is empty, and every pilot was alive
  until the test stopped it and then exited 0.

`test_two_instances_behind_nginx_share_one_login_rate_limit`: logins alternating through nginx to
both instances (nginx's `X-Ailuro-Upstream` reply header names the instance) are counted in one
window: the calls after the limit get 429 whichever instance answers.

The figures the run prints (jobs/s through the balancer, the per-job protocol overhead the pilots
measured) are the measured basis of docs/operator-guide/scaling.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.utils import timezone

from config.celery import app
from dispatcher.models import Job, JobAttempt, RetryRule
from dispatcher.services import NewJob, workflow_submit
from dispatcher.services.watcher import EC_SEND_TIMEOUT
from tests.ailuro.server import AiluroServer, free_port, pilot_argv, pilot_token_file
from tests.factories import QueueFactory, UserFactory
from tests.interop.celery_procs import (
    ROOT,
    beat_start,
    broker_purge,
    process_stop,
    wait_for,
    worker_start,
)
from tests.processes import stop_process_group
from tests.workers import broker_redis_url, install_lock

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("default_retry_rules"),
]

N_JOBS = 120
N_PILOTS = 4
LOGIN_RATE = 4  # per hour: the window cannot turn over during the test
# The shortest send timeout the settings allow: a dispatch whose reply died with the instance is
# failed by the watcher (and retried) a minute later instead of after the production 30 minutes.
SENT_TIMEOUT_S = 60
QUEUE = "MULTI_NODE"


def cache_url() -> str:
    """The shared cache: database 10 of the broker's Redis (the broker itself uses another)."""
    return broker_redis_url(10)


def nginx_binary() -> Path:
    """Debian's nginx, unpacked by scripts/deploy-tools.sh (installed on first use)."""
    nginx = ROOT / "var" / "deploy-tools" / "bin" / "nginx"
    if not nginx.exists():
        with install_lock("deploy-tools"):
            subprocess.run([str(ROOT / "scripts" / "deploy-tools.sh"), "install"], check=True, timeout=900)
    return nginx


class Balancer:
    """nginx in the foreground (`daemon off`) on a free loopback port, every path under `tmp`,
    proxying to `upstreams` the way deploy/nginx/ailuro.conf does (without TLS)."""

    def __init__(self, tmp: Path, upstreams: list[str]) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=10s;" for u in upstreams)
        temp_paths = "\n".join(
            f"  {kind}_temp_path {tmp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(
            f"""daemon off;
worker_processes 1;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 512; }}
http {{
{temp_paths}
  log_format upstream '$request_id|$request_method|$uri|$status|$upstream_addr|$upstream_status|$request_time';
  access_log {tmp / "access.log"} upstream;
  upstream ailuro_web {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size 16m;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Request-ID $request_id;
    proxy_redirect off;
    proxy_connect_timeout 2s;
    proxy_read_timeout 60s;
    # A failed connect is retried on the other instance (nothing was sent, so even a POST is
    # safe); a POST that reached an instance is not replayed (no `non_idempotent`): the pilot
    # decides, and nginx answers 502.
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 2;
    add_header X-Ailuro-Upstream $upstream_addr always;
    location / {{ proxy_pass http://ailuro_web; }}
  }}
}}
"""
        )

    def start(self) -> None:
        with (self.tmp / "nginx.out").open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(nginx_binary()),
                    "-p",
                    str(self.tmp),
                    "-c",
                    str(self.conf),
                    "-e",
                    str(self.tmp / "error.log"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / "error.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(self.url + "/api/v1/pilot/append_log", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 405:  # the GET reached an instance
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("nginx did not come up in 15 s: " + (self.tmp / "error.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, sig=signal.SIGQUIT, timeout=10)
        self.proc = None

    def access(self) -> list[list[str]]:
        path = self.tmp / "access.log"
        return [line.split("|") for line in path.read_text().splitlines()] if path.exists() else []


@dataclass
class Web:
    instances: list[AiluroServer]
    balancer: Balancer


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """Two instances with the shared cache, nginx in front; all stopped by pid at the end."""
    env = {
        "AILURO_CACHE_URL": cache_url(),
        "AILURO_TRUSTED_PROXIES": "127.0.0.1/32",
        "AILURO_RATE_LOGIN": f"{LOGIN_RATE}/hour",
    }
    instances = []
    for name in ("web-a", "web-b"):
        (tmp_path / name).mkdir()
        instances.append(AiluroServer(tmp_path / name, env, workers=2, threads=4))
    (tmp_path / "nginx").mkdir()
    balancer = Balancer(tmp_path / "nginx", [f"127.0.0.1:{s.port}" for s in instances])
    try:
        for server in instances:
            server.start()
        balancer.start()
        yield Web(instances, balancer)
    finally:
        balancer.stop()
        for server in instances:
            server.stop()


@pytest.fixture
def loops(django_db_blocker: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Path]]:
    """Two Celery workers and one beat: brokerage, watcher, rollup … on their periods."""
    folder = tmp_path / "celery"
    folder.mkdir()
    env = {"AILURO_SENT_TIMEOUT": str(SENT_TIMEOUT_S), "AILURO_CACHE_URL": cache_url()}
    logs = [folder / "worker-1.log", folder / "worker-2.log", folder / "beat.log"]
    procs: list[subprocess.Popen[bytes]] = []
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        broker_purge()
    try:
        procs.append(worker_start("multi-1", logs[0], env))
        procs.append(worker_start("multi-2", logs[1], env))
        procs.append(beat_start(folder / "beat-schedule", logs[2], env))
        yield logs
    finally:
        for proc in procs:
            process_stop(proc)


@contextlib.contextmanager
def pilots(url: str, tmp: Path, token: Path, n: int) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    """`n` pilots with one spool (tmp/spool), their output in files; killed if still alive."""
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(n):
            log = tmp / f"pilot-{i}.log"
            argv = pilot_argv(url, QUEUE, token, tmp / f"pilot-{i}", "--idle-wait", "600", "--retry-cap", "2")
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            running.append((proc, log))
        yield running
    finally:
        for proc, _ in running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _lose_one_dispatch_reply(url: str, token: Path) -> int:
    """acquire_jobs through the balancer; the reply is read and dropped (the pilot never gets
    it). Returns the pandaid the server dispatched."""
    request = urllib.request.Request(
        url + "/api/v1/pilot/acquire_jobs",
        data=json.dumps({"site_name": QUEUE, "n_jobs": 1, "node": "lost-reply"}).encode(),
        headers={"Authorization": f"Bearer {token.read_text().strip()}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        [job] = json.load(reply)["data"]["jobs"]
    return int(job["PandaID"])


def _watcher_when_due() -> None:
    """Tick the watcher once a `sent` job is past the send timeout (beat ticks it every 60 s; this
    only saves wall time)."""
    cutoff = timezone.now() - dt.timedelta(seconds=SENT_TIMEOUT_S)
    if Job.objects.filter(queue_id=QUEUE, jobstatus="sent", statechangetime__lt=cutoff).exists():
        app.send_task("dispatcher.loop_watcher")
        time.sleep(1)


def _finished() -> int:
    return Job.objects.filter(queue_id=QUEUE, jobstatus="finished").count()


def _timings(logs: list[Path]) -> list[dict[str, float]]:
    found = []
    for log in logs:
        for match in re.finditer(r"job \d+ done: (\{.*\})", log.read_text()):
            found.append(json.loads(match[1]))
    return found


def test_pilots_ride_out_a_web_instance_killed_mid_run(web: Web, loops: list[Path], tmp_path: Path) -> None:
    QueueFactory(name=QUEUE)
    runs = tmp_path / "runs"
    runs.mkdir()
    jobs = [
        NewJob(
            name=f"j{i:03d}",
            label="step",
            command=f"echo j{i:03d} >> {runs}/j{i:03d}; sleep {0.3 + (i % 8) / 10:.1f}",
            memory_mb=500,
        )
        for i in range(N_JOBS)
    ]
    RetryRule.objects.filter(name="sent-no-reply").update(params={"backoff_s": 2})
    workflow = workflow_submit(owner=UserFactory(), name="multi-node", jobs=jobs)
    token = pilot_token_file(tmp_path, [QUEUE])
    (tmp_path / "pilots").mkdir()
    victim, survivor = web.instances
    logs = list(loops)
    started = time.monotonic()
    wait_for(
        lambda: Job.objects.filter(queue_id=QUEUE, jobstatus="activated").exists(),
        what="brokerage activates the jobs",
        timeout=30,
        logs=logs,
    )
    lost_on_purpose = _lose_one_dispatch_reply(web.balancer.url, token)
    with pilots(web.balancer.url, tmp_path / "pilots", token, N_PILOTS) as fleet:
        logs += [log for _, log in fleet]
        wait_for(
            lambda: _finished() >= N_JOBS // 3, what=f"{N_JOBS // 3} jobs finished", timeout=90, logs=logs
        )
        assert victim.proc is not None
        killed_at = time.monotonic()
        finished_at_kill = _finished()
        # Frozen first (a hung host), so that pilot calls are inside the instance — in a worker or
        # in its listen backlog — when it dies: nginx has sent them, gets a reset and answers 502.
        os.killpg(victim.proc.pid, signal.SIGSTOP)
        time.sleep(2)
        os.killpg(victim.proc.pid, signal.SIGKILL)  # master and workers, requests in flight
        victim.proc.wait()
        victim.proc = None

        def all_done() -> bool:
            _watcher_when_due()
            return _finished() == N_JOBS

        wait_for(all_done, what="every job finished", timeout=SENT_TIMEOUT_S + 90, logs=logs)
        wall = time.monotonic() - started
        alive = [proc.poll() is None for proc, _ in fleet]
        assert all(alive), f"pilots exited before they were stopped: {alive}"
        for proc, _ in fleet:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc, _ in fleet]
    pilot_text = "\n".join(log.read_text()[-3000:] for _, log in fleet)
    assert codes == [0] * N_PILOTS, pilot_text
    for _, log in fleet:
        text = log.read_text()
        assert not re.search(r"LOST|UNDELIVERED|refused by the server|no longer wanted", text), text[-3000:]

    # No report lost: every job finished; nothing left in the node's spool.
    assert Job.objects.filter(workflow=workflow).exclude(jobstatus="finished").count() == 0
    assert sorted((tmp_path / "pilots" / "spool").glob("*.json")) == []

    # Each payload ran exactly once, counted from the payloads' own output.
    lines = {path.name: path.read_text().splitlines() for path in runs.iterdir()}
    assert sorted(lines) == [job.name for job in jobs]
    twice = {name: text for name, text in lines.items() if text != [name]}
    assert twice == {}, f"payloads that ran more than once: {twice}"

    # Exactly one attempt ran each payload; any other was a dispatch lost with the instance.
    attempts = list(
        JobAttempt.objects.filter(job__workflow=workflow).values_list(
            "job__name", "attemptnr", "jobstatus", "starttime", "jobdispatchererrorcode"
        )
    )
    ran = Counter(
        name for name, _, status, start, _ in attempts if status == "finished" and start is not None
    )
    assert ran == Counter({job.name: 1 for job in jobs}), ran
    lost = [row for row in attempts if not (row[2] == "finished" and row[3] is not None)]
    lost_name = Job.objects.get(pk=lost_on_purpose).name
    assert [row[:3] for row in attempts if row[0] == lost_name and row[2] == "failed"] == [
        (lost_name, 1, "failed")
    ], attempts
    assert all(
        status == "failed" and start is None and code == EC_SEND_TIMEOUT for _, _, status, start, code in lost
    ), lost

    # The balancer: both instances served pilot calls; after the kill nginx found the victim's
    # port refused and moved on to the survivor.
    access = web.balancer.access()
    served = Counter(
        upstream.strip()
        for fields in access
        if fields[2].startswith("/api/v1/pilot/")
        for upstream in fields[4].split(",")
    )
    victim_addr, survivor_addr = f"127.0.0.1:{victim.port}", f"127.0.0.1:{survivor.port}"
    assert served[victim_addr] > 0 and served[survivor_addr] > 0, served
    errors = (web.balancer.tmp / "error.log").read_text()
    assert "Connection refused" in errors and f":{victim.port}/" in errors, errors[-2000:]
    cut = [
        line
        for line in errors.splitlines()
        if "[error]" in line and "while reading response header" in line and f":{victim.port}/" in line
    ]
    assert cut, f"no request was inside the instance when it died: {errors[-2000:]}"
    bad_gateway = Counter(fields[2] for fields in access if fields[3] == "502")
    timings = _timings([log for _, log in fleet])
    overhead = [t["acquire_to_start_s"] + t["end_to_report_s"] for t in timings]
    # The rate through the balancer: the jobs the pilots took in one go (all but the one whose
    # reply was lost on purpose), from the first payload start to the last payload end.
    window = JobAttempt.objects.filter(job__workflow=workflow, jobstatus="finished").exclude(
        job_id=lost_on_purpose
    )
    first = min(window.values_list("starttime", flat=True))
    last = max(window.values_list("endtime", flat=True))
    summary = {
        "jobs": N_JOBS,
        "pilots": N_PILOTS,
        "wall_s": round(wall, 1),
        "jobs_per_s": round((N_JOBS - 1) / (last - first).total_seconds(), 2),
        "finished_at_kill": finished_at_kill,
        "kill_after_s": round(killed_at - started, 1),
        "dispatch_replies_lost": len(lost),
        "requests_cut_by_the_kill": len(cut),
        "replies_502_by_call": dict(bad_gateway),
        "calls_by_upstream": dict(served),
        "overhead_ms_median": round(statistics.median(overhead) * 1000, 1),
        "overhead_ms_p90": round(statistics.quantiles(overhead, n=10)[-1] * 1000, 1),
    }
    print("MULTI-NODE", json.dumps(summary), file=sys.stderr)


def _login(url: str, client: str) -> tuple[int, str]:
    request = urllib.request.Request(url + "/login/", headers={"X-Forwarded-For": client})
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=10) as reply:
            return int(reply.status), str(reply.headers.get("X-Ailuro-Upstream", ""))
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.headers.get("X-Ailuro-Upstream", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_two_instances_behind_nginx_share_one_login_rate_limit(web: Web) -> None:
    # A fresh documentation address per run: earlier runs' windows in the shared cache don't count.
    client = f"198.51.100.{random.randrange(1, 255)}"
    replies = [_login(web.balancer.url, client) for _ in range(LOGIN_RATE + 4)]
    statuses = [status for status, _ in replies]
    assert statuses == [302] * LOGIN_RATE + [429] * 4, replies
    upstreams = {f"127.0.0.1:{s.port}" for s in web.instances}
    # nginx alternates: both instances counted calls of the window, and both refused past it.
    assert {upstream for _, upstream in replies[:LOGIN_RATE]} == upstreams, replies
    assert {upstream for _, upstream in replies[LOGIN_RATE:]} == upstreams, replies
    # Another client behind the same balancer has a window of its own.
    other = f"203.0.113.{random.randrange(1, 255)}"
    assert _login(web.balancer.url, other)[0] == 302
