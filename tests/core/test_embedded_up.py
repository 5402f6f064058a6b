"""The embedded run as a newcomer starts it (`ailuro up`: SQLite, web server, loops, local pilots,
the demo workflow and campaign), then every page family of the monitor, as HTML, `?json` and htmx
partial, and the REST lists, checked for content against what the API reports.

The suite otherwise runs on PostgreSQL, so this is what catches a monitor read that only
PostgreSQL understands (the monitor's aggregates read the rollups on PostgreSQL and count with the
ORM on SQLite, pandamon/queries/).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from embedded.management.commands.up import log_rotate
from tests.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
BANNER_END = "Ctrl-C stops everything."

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Embedded:
    proc: subprocess.Popen[str]
    base: str
    started: float
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    banner: threading.Event = field(default_factory=threading.Event)

    def output(self) -> str:
        return "\n".join(self.lines)

    def log_path(self) -> Path:
        """The children's log file, as the banner names it."""
        line = next(line for line in self.lines if line.strip().startswith("logs:"))
        return Path(line.split()[1])

    def get(self, path: str, *, hx: bool = False) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers={"HX-Request": "true"} if hx else {})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=20) as reply:  # noqa: S310  (our loopback server)
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def ok(self, path: str, *, hx: bool = False) -> str:
        status, body = self.get(path, hx=hx)
        assert status == 200, f"{path}{' (htmx)' if hx else ''} answered {status}: {body[:2000]}"
        return body

    def json(self, path: str) -> Any:
        return json.loads(self.ok(path))

    def api_all(self, path: str) -> list[dict[str, Any]]:
        """Every row of a cursor-paginated API list."""
        rows: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            page = self.json(url)
            rows += page["results"]
            url = page["next"].removeprefix(self.base) if page["next"] else None
        return rows


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        # Without PYTHONUNBUFFERED, as a user's shell runs it: the banner must still come at once.
        # Without the suite's static folder: the run collects into its own data folder.
        if k
        not in {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "DJANGO_SETTINGS_MODULE",
            "PYTHONUNBUFFERED",
            "AILURO_STATIC_ROOT",
        }
    }
    env["AILURO_DATA_DIR"] = str(tmp_path_factory.mktemp("embedded"))
    env["AILURO_LOG_LEVEL"] = "INFO"  # the embedded run's default (the suite runs at WARNING)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailuro.cli", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = Embedded(proc=proc, base=f"http://127.0.0.1:{port}", started=time.monotonic(), env=env)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            run.lines.append(line.rstrip("\n"))
            if BANNER_END in line:
                run.banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield run
    finally:
        stop_process_group(proc, signal.SIGINT)
        reader.join(timeout=5)


def test_ailuro_up_serves_monitor_and_admin_within_60_seconds_without_services(embedded: Embedded) -> None:
    # The banner, not the first answer of `/`: SIGINT before `up` has printed it used to race the
    # readiness poll (the flake this waits out).
    assert embedded.banner.wait(60), f"no banner after 60 s:\n{embedded.output()}"
    assert time.monotonic() - embedded.started < 60
    assert f"{embedded.base}/" in embedded.output()
    # The children's JSON logs go to the file the banner names; the terminal stays readable.
    assert embedded.log_path().name == "up.log"
    assert not [line for line in embedded.lines if line.startswith("{") and '"severity"' in line]
    monitor = embedded.ok("/")
    assert "demo-step1" in monitor
    assert "SLAC_Rubin_Himem" in monitor
    admin = embedded.ok("/admin/login/")
    assert "Django administration" in admin or "Log in" in admin


def _demo_workflow(embedded: Embedded) -> dict[str, Any]:
    """The demo workflow once it has run to its end (about 25 s after the banner here)."""
    assert embedded.banner.wait(60), embedded.output()
    deadline = time.monotonic() + 45
    while True:
        [workflow] = embedded.api_all("/api/v1/workflows/?name=demo-step1")
        if workflow["status"] in {"done", "finished", "failed"} or time.monotonic() > deadline:
            return workflow
        time.sleep(1)


def test_every_monitor_page_answers_with_the_demo_and_the_counts_the_api_reports(embedded: Embedded) -> None:
    workflow = _demo_workflow(embedded)
    wid = workflow["id"]
    assert workflow["status"] == "done", workflow
    # Every line of the log is one JSON object with a time and a severity, the loops' runs included.
    events = [json.loads(line) for line in embedded.log_path().read_text().splitlines() if line]
    assert all({"time", "severity"} <= set(e) for e in events)
    assert any(e.get("event") == "loop.ran" for e in events)
    assert sum(1 for e in events if e.get("event") == "job.attempt_end") >= 25
    jobs = embedded.api_all(f"/api/v1/jobs/?workflow={wid}&limit=100")
    by_state = Counter(j["jobstatus"] for j in jobs)
    assert by_state == {"finished": len(jobs)} and len(jobs) == 25

    # /jobs/: exact total, facets and chart from one scan; PanDA's filters and wildcards.
    listed = embedded.json(f"/jobs/?workflow={wid}&json")
    assert listed["total"] == len(jobs)
    assert dict(listed["facets"]["jobstatus"]) == by_state
    assert dict(listed["facets"]["label"]) == Counter(j["label"] for j in jobs)
    assert dict(listed["facets"]["computingsite"]) == Counter(j["computingsite"] for j in jobs)
    assert {j["pandaid"] for j in listed["jobs"]} == {j["pandaid"] for j in jobs}
    assert embedded.json(f"/jobs/?workflow={wid}&jobstatus=fin*&json")["total"] == len(jobs)
    assert embedded.json(f"/jobs/?workflow={wid}&jobstatus=!finished&json")["total"] == 0
    not_coadd = sum(j["label"] in {"isr", "calibrate"} for j in jobs)
    assert embedded.json(f"/jobs/?workflow={wid}&label=isr|calibrate&json")["total"] == not_coadd > 0
    site = jobs[0]["computingsite"]
    prefix = site[: len(site) // 2]
    in_site = sum(j["computingsite"].startswith(prefix) for j in jobs)
    assert embedded.json(f"/jobs/?workflow={wid}&computingsite={prefix}*&json")["total"] == in_site
    page = embedded.ok(f"/jobs/?workflow={wid}")
    assert 'data-figure="jobs-over-time"' in page
    assert "calibrate" in embedded.ok(f"/jobs/?workflow={wid}&sort=time-ascending", hx=True)

    # /job/<pandaid>/ with its log tail, attempts and reproduce script.
    coadd = next(j for j in jobs if j["label"] == "coadd")
    assert embedded.json(f"/job/{coadd['pandaid']}/?json")["job"]["jobstatus"] == "finished"
    assert "coadd" in embedded.ok(f"/job/{coadd['pandaid']}/")
    embedded.ok(f"/job/{coadd['pandaid']}/log/")
    embedded.ok(f"/job/{coadd['pandaid']}/log/", hx=True)

    # /tasks/ and /task/<id>/: per-state counts, facets, histograms and slowest jobs.
    tasks = embedded.api_all(f"/api/v1/tasks/?workflow={wid}")
    assert sorted(t["label"] for t in tasks) == ["calibrate", "coadd", "isr"]
    task_list = embedded.json("/tasks/?json")
    assert {t["jeditaskid"] for t in tasks} <= {t["jeditaskid"] for t in task_list["tasks"]}
    assert dict(task_list["facets"]["username"])["demo"] >= 3
    embedded.ok("/tasks/", hx=True)
    for task in tasks:
        detail = embedded.json(f"/task/{task['jeditaskid']}/?json")
        n = sum(j["jeditaskid"] == task["jeditaskid"] for j in jobs)
        assert detail["counts"] == {"finished": n}
        assert sum(c for _, _, c in detail["histograms"]["walltime_min"]) == n
        assert sum(c for _, _, c in detail["histograms"]["max_rss_mb"]) == n
        assert len(detail["slowest_jobs"]) == min(n, 10)
        assert task["name"] in embedded.ok(f"/task/{task['jeditaskid']}/")

    # /workflows/ and /workflow/<id>/ with the task DAG and a label's job DAG.
    assert "demo-step1" in embedded.ok("/workflows/")
    detail = embedded.json(f"/workflow/{wid}/?json")
    assert detail["counts"] == {"finished": len(jobs)}
    assert len(detail["nodes"]) == 3
    assert "isr" in embedded.ok(f"/workflow/{wid}/?label=isr")
    embedded.ok(f"/workflow/{wid}/", hx=True)

    # /errors/: the demo campaign's planned failure, masked and split like on PostgreSQL.
    failed = embedded.api_all("/api/v1/attempts/?jobstatus=failed")
    errors = embedded.json("/errors/?json")
    assert errors["failed_attempts"] == len(failed)
    assert sum(g["count"] for g in errors["errors"]) >= len(failed)
    assert sum(n for _, n in errors["by_site"]) == len(failed)
    embedded.ok("/errors/")
    embedded.ok("/errors/?days=3&source=jobs", hx=True)

    # /sites/, /site/<name>/ for every site, /dash/, /users/, /user/<name>/, campaigns.
    sites = embedded.api_all("/api/v1/sites/")
    queue_jobs = Counter(j["computingsite"] for j in jobs)
    site_list = embedded.json("/sites/?json")
    assert {q["name"] for q in site_list["queues"]} >= set(queue_jobs)
    for q in site_list["queues"]:
        assert q["counts"]["finished"] >= queue_jobs.get(q["name"], 0)
    for s in sites:
        assert s["name"] in embedded.ok(f"/site/{s['name']}/")
        embedded.json(f"/site/{s['name']}/?json")
    dash = embedded.json("/dash/?json")
    assert sum(r["total"] for r in dash["regions"]) >= len(jobs)
    embedded.ok("/dash/")
    users = embedded.json("/users/?json")
    assert "demo" in json.dumps(users)
    assert "demo-step1" in embedded.ok("/user/demo/")
    embedded.json("/user/demo/?json")
    assert "demo" in embedded.ok("/campaigns/")
    campaign = embedded.json("/campaigns/?json")["results"][0]
    assert embedded.json(f"/campaign/{campaign['id']}/?json")["steps"]
    embedded.ok(f"/campaign/{campaign['id']}/")

    # The REST lists and details.
    for path in (
        "/api/v1/workflows/",
        "/api/v1/tasks/",
        "/api/v1/jobs/",
        "/api/v1/attempts/",
        "/api/v1/queues/",
    ):
        assert embedded.json(path)["results"], path
    assert embedded.json(f"/api/v1/workflows/{wid}/")["id"] == wid
    assert embedded.json(f"/api/v1/jobs/{coadd['pandaid']}/")["pandaid"] == coadd["pandaid"]
    assert embedded.json(f"/api/v1/tasks/{tasks[0]['jeditaskid']}/")["jeditaskid"] == tasks[0]["jeditaskid"]
    assert embedded.json(f"/api/v1/sites/{sites[0]['name']}/")["name"] == sites[0]["name"]


class Operator:
    """A browser-like session of the demo's admin account (its password is in the banner)."""

    def __init__(self, embedded: Embedded) -> None:
        self.base = embedded.base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        found = re.search(r"user admin, password (\S+)\)", embedded.output())
        assert found, embedded.output()
        self.get("/admin/login/")
        status, body = self.post("/admin/login/?next=/admin/", username="admin", password=found.group(1))
        assert status == 200 and "Log out" in body, body[:2000]

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.base + path, timeout=20) as reply:
            return reply.status, reply.read().decode()

    def post(self, path: str, **fields: str) -> tuple[int, str]:
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})  # noqa: S310
        try:
            with self.opener.open(request, timeout=20) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def test_the_operator_restarts_the_demo_campaigns_failed_group_and_kills_a_job(embedded: Embedded) -> None:
    _demo_workflow(embedded)
    operator = Operator(embedded)
    [campaign] = embedded.json("/campaigns/?json")["results"]
    cid = campaign["id"]
    deadline = time.monotonic() + 30
    while True:  # the planned failure: one group of the demo campaign fails once
        groups = [g for step in embedded.json(f"/campaign/{cid}/?json")["steps"] for g in step["groups"]]
        failed = [g for g in groups if g["status"] == "failed"]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert failed, groups
    status, page = operator.post(
        f"/campaign/{cid}/action/", object="group", id=str(failed[0]["id"]), verb="restart"
    )
    assert status == 200
    assert re.search(r"restart: restarted \d+ jobs", page), page[:3000]
    # The restarted jobs wait for brokerage and a pilot (seconds): kill one from its page.
    restarted = embedded.api_all("/api/v1/jobs/?jobstatus=defined|activated")
    assert restarted, "the restart left no job to run"
    pandaid = restarted[0]["pandaid"]
    status, page = operator.post(f"/job/{pandaid}/kill/")
    assert status == 200, page[:2000]
    assert f"job {pandaid} cancelled" in page
    assert embedded.json(f"/job/{pandaid}/?json")["job"]["jobstatus"] == "cancelled"


def test_a_second_up_on_the_same_data_directory_exits_non_zero_and_leaves_the_first_alone(
    embedded: Embedded,
) -> None:
    assert embedded.banner.wait(60), embedded.output()
    first_log = embedded.log_path()
    before = first_log.read_text()
    assert before, "the first run has logged nothing yet"
    second = subprocess.run(
        [sys.executable, "-m", "ailuro.cli", "up", "--port", str(_free_port())],
        cwd=ROOT,
        env=embedded.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0, second.stdout + second.stderr
    holder = re.search(r"is in use by another `ailuro up` \(pid (\d+)\)", second.stderr)
    assert holder, second.stderr
    os.kill(int(holder[1]), 0)  # the pid named is the first run's, alive
    # The first run's log was neither truncated nor written by the second, and the first still serves.
    assert first_log.read_text().startswith(before)
    assert embedded.proc.poll() is None
    embedded.ok("/")


def test_ctrl_c_stops_everything_and_exits_0(embedded: Embedded) -> None:
    assert embedded.banner.wait(60), embedded.output()
    os.killpg(embedded.proc.pid, signal.SIGINT)
    assert embedded.proc.wait(timeout=30) == 0, embedded.output()
    time.sleep(0.2)  # the reader thread drains the last lines
    assert "stopped" in embedded.output()


def test_a_terminate_signal_to_up_alone_stops_everything(tmp_path: Path) -> None:
    # As systemd or a container runtime stops it: SIGTERM to the `ailuro up` process only.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "AILURO_STATIC_ROOT"}
    }
    env["AILURO_DATA_DIR"] = str(tmp_path)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailuro.cli", "up", "--no-demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if BANNER_END in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stdout.read()
        # Nothing of the group is left: the web server's port is free again.
        # (SO_REUSEADDR: closed connections' TIME_WAIT does not count; a listening socket would.)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    finally:
        stop_process_group(proc, signal.SIGKILL)


def test_each_run_starts_a_fresh_log_and_keeps_the_five_before_it(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    for run in range(7):
        log_rotate(log, keep=5)
        log.write_text(f"run {run}\n")
    kept = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert kept == {
        "up.log": "run 6\n",
        "up.log.1": "run 5\n",
        "up.log.2": "run 4\n",
        "up.log.3": "run 3\n",
        "up.log.4": "run 2\n",
        "up.log.5": "run 1\n",
    }
