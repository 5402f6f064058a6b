"""The DP0.2-shaped campaign end to end: PostgreSQL, a real Celery worker and beat running every
loop, a gunicorn server, and real `ailuro pilot` processes running each job's shell command.

The campaign is tests/campaigns/dp02.py: step 1 visit × detector (20 × 9, one group per visit:
isr, then calibrate, clustered per visit × detector: 180 cluster jobs `isr+calibrate_cluster_<v>_<d>`
each running its isr and calibrate members, decision 0010), step 2 per visit (visit_summary, gathering its visit's 9 detectors), step 3
tract × patch × band over a 1 × 4 patch sky map in 3 bands (make_warp, then assemble_coadd,
gathering the visits overlapping each patch). Each command writes its output file into the test's
`out/` folder (isr appends, so a rerun would show); visit_summary writes how many calibrated detectors of its visit it found.

Two jobs fail, driven by marker files in the test's `markers/` folder:

* `calibrate` of visit 3, detector 5 exits 137 once (the marker is removed as it fails): the
  default rule `oom-exit-137` retries its cluster job, whose second attempt runs only calibrate
  3/5 (isr 3/5 finished in the first and is not rerun); calibrate 3/5 and its cluster job are the
  only jobs of the campaign with a second attempt;
* `isr` of visit 7, detector 2 exits 1 with a `KeyError` every time: `payload-error` does not retry
  its cluster job, its only descendant (calibrate 7/2, its cluster sibling, skipped by the payload)
  is pruned and the 8 other clusters of the visit finish and keep their outputs. Group `visit-7` ends `failed` and step 1 waits, the
  advancer starting nothing of step 2.

What the campaign then does, asserted below: an operator accepts `visit-7` with its partial
outputs (the recovery verb for failures that are acceptable). Gathers between steps are recorded per
group (decision 0008), not per job, so nothing downstream is pruned: step 1 is done, step 2's
`visit-7` runs its visit_summary over the 8 calibrated detectors that exist, and the step-3 groups
whose patches overlap visit 7 (`tract-0_patch-2`, `tract-0_patch-3`) run in full. The campaign ends
`done`, with the two jobs without outputs (isr 7/2, calibrate 7/2) the only ones not finished.

Counts are asserted at every stage (step 1 settled, after the accept, at the end) from the API, the
page's `?json` and independent SQL over the tables. Job counts by label and state (`sql_jobs`,
`counted_jobs`, the group API's) include the cluster jobs under their own label `CLUSTER`; members
and cluster jobs are also counted apart (`sql_members`, `sql_clusters`). Progress (jobs done of
jobs planned) counts the members only: the planned jobs are the quanta.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.models import F

from core.services import token_create
from dispatcher.models import Task
from dispatcher.queries import task_state_counts
from dispatcher.services.clusters import cluster_results
from tests.ailuro.server import ROOT, AiluroServer, pilot_argv, pilot_token_file
from tests.campaigns.dp02 import DP02_OVERLAPS, dp02_spec_text
from tests.factories import QueueFactory, UserFactory
from tests.interop.celery_procs import beat_start, broker_purge, process_stop, worker_start

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("default_retry_rules"),
]

QUEUE = "DP02_Q"
PILOTS = 3
# Loop periods for the worker, beat and server: the advancer every 2 s instead of 30 s.
LOOP_PERIODS = "campaigns=2,brokerage=1,rollup=2"
# YAML added to step 1 (indented as its keys): isr and calibrate of one visit × detector run as one
# cluster job (`isr+calibrate_cluster_<visit>_<detector>`), the members keeping their own rows.
STEP1_CLUSTER = "    cluster: {by: [visit, detector], labels: [isr, calibrate]}\n"
CLUSTER = "isr+calibrate_cluster"

ONCE = ("calibrate", 3, 5)  # fails once with exit 137, retried by the default rules
FOR_GOOD = ("isr", 7, 2)  # fails every time with exit 1 (KeyError), never retried


def commands(markers: Path, out: Path) -> dict[str, str]:
    """Shell one-liners per label; the markers decide which data id fails and how."""
    return {
        "isr": (
            f"if [ -e {markers}/fail-isr-{{visit}}-{{detector}} ]; then "
            "echo \"KeyError: 'amp {detector}'\" >&2; exit 1; fi; "
            f"echo isr >> {out}/postisr_{{visit}}_{{detector}}"
        ),
        "calibrate": (
            f"test -e {out}/postisr_{{visit}}_{{detector}} || exit 3; "
            f"if rm {markers}/once-calibrate-{{visit}}-{{detector}} 2>/dev/null; then "
            "echo 'Killed' >&2; exit 137; fi; "
            f"echo calexp > {out}/calexp_{{visit}}_{{detector}}"
        ),
        "visit_summary": f"ls {out} | grep -c '^calexp_{{visit}}_' > {out}/summary_{{visit}}",
        "make_warp": f"echo warp > {out}/warp_{{tract}}_{{patch}}_{{band}}",
        "assemble_coadd": (
            f"test -e {out}/warp_{{tract}}_{{patch}}_{{band}} && "
            f"echo coadd > {out}/coadd_{{tract}}_{{patch}}_{{band}}"
        ),
    }


# --- processes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def celery_loops(tmp: Path) -> Iterator[list[Path]]:
    """A worker and a beat running every loop on the test database, with short periods."""
    logs = [tmp / "worker.log", tmp / "beat.log"]
    env = {"AILURO_LOOP_PERIODS": LOOP_PERIODS}
    broker_purge()
    worker = worker_start("dp02", logs[0], env)
    try:
        beat = beat_start(tmp / "beat-schedule", logs[1], env)
        try:
            yield logs
        finally:
            process_stop(beat)
    finally:
        process_stop(worker)


class Fleet:
    """`PILOTS` pilots of the queue, a fresh one started whenever one exits."""

    def __init__(self, server: AiluroServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.token = pilot_token_file(tmp, [QUEUE])
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def keep_running(self) -> None:
        alive = sum(1 for proc, _ in self.started if proc.poll() is None)
        for _ in range(PILOTS - alive):
            n = len(self.started)
            log = self.tmp / f"pilot{n}.log"
            argv = pilot_argv(
                self.server.url, QUEUE, self.token, self.tmp / f"pilot{n}", "--idle-wait", "600"
            )
            with log.open("wb") as output:
                proc = subprocess.Popen(
                    argv, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.started.append((proc, log))

    @property
    def logs(self) -> list[Path]:
        return [log for _, log in self.started]

    def stop(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until(check: Callable[[], bool], *, what: str, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")
        time.sleep(0.5)


# --- what the server says, and what the tables say -------------------------------------------------


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=self.headers)
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())


def sql(query: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def sql_groups(campaign_id: int) -> dict[str, dict[str, int]]:
    """Step → group status → groups."""
    out: dict[str, dict[str, int]] = {}
    for step, status, n in sql(
        """SELECT s.name, g.status, COUNT(*) FROM campaigns_group g JOIN campaigns_step s ON s.id = g.step_id
           WHERE g.campaign_id = %s GROUP BY s.name, g.status""",
        [campaign_id],
    ):
        out.setdefault(step, {})[status] = n
    return out


def sql_jobs(campaign_id: int) -> dict[str, dict[str, int]]:
    """Label → job status → jobs, over the current attempts of the campaign's groups."""
    out: dict[str, dict[str, int]] = {}
    for label, status, n in sql(
        """SELECT j.label, j.jobstatus, COUNT(*) FROM campaigns_group g
           JOIN campaigns_groupattempt a ON a.group_id = g.id AND a.attempt = g.attempt
           JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
           WHERE g.campaign_id = %s GROUP BY j.label, j.jobstatus""",
        [campaign_id],
    ):
        out.setdefault(label, {})[status] = n
    return out


def sql_members(campaign_id: int) -> dict[str, dict[str, int]]:
    """Label → job status → member jobs (rows run by a cluster job), over the current attempts."""
    out: dict[str, dict[str, int]] = {}
    for label, status, n in sql(
        """SELECT j.label, j.jobstatus, COUNT(*) FROM campaigns_group g
           JOIN campaigns_groupattempt a ON a.group_id = g.id AND a.attempt = g.attempt
           JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
           WHERE g.campaign_id = %s AND j.cluster_id IS NOT NULL GROUP BY j.label, j.jobstatus""",
        [campaign_id],
    ):
        out.setdefault(label, {})[status] = n
    return out


def sql_clusters(campaign_id: int) -> dict[str, int]:
    """Job status → cluster jobs (jobs with members), over the current attempts."""
    return dict(
        sql(
            """SELECT j.jobstatus, COUNT(*) FROM campaigns_group g
               JOIN campaigns_groupattempt a ON a.group_id = g.id AND a.attempt = g.attempt
               JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
               WHERE g.campaign_id = %s AND EXISTS (SELECT 1 FROM dispatcher_job m WHERE m.cluster_id = j.pandaid)
               GROUP BY j.jobstatus""",
            [campaign_id],
        )
    )


def counted_jobs(campaign_id: int) -> dict[str, dict[str, int]]:
    """Label → job status → jobs from the dispatcher's task counters (`task_state_counts`, what the
    advancer and the pages read), over the same current attempts as `sql_jobs`."""
    tasks = Task.objects.filter(
        workflow__campaign_attempt__group__campaign_id=campaign_id,
        workflow__campaign_attempt__attempt=F("workflow__campaign_attempt__group__attempt"),
    ).values_list("jeditaskid", "label")
    label_of = dict(tasks)
    out: dict[str, dict[str, int]] = {}
    for task_id, counts in task_state_counts(list(label_of)).items():
        for status, n in counts.items():
            if n:
                by_status = out.setdefault(label_of[task_id], {})
                by_status[status] = by_status.get(status, 0) + n
    return out


def group_jobs_served(api: Api, campaign_id: int, step: str) -> dict[str, dict[str, int]]:
    """Group → job status → jobs of its current attempt, as the group API serves them."""
    detail = api.call(f"/api/v1/campaigns/{campaign_id}/")
    [groups] = [s["groups"] for s in detail["steps"] if s["name"] == step]
    out = {}
    for g in groups:
        chain = api.call(f"/api/v1/campaign-groups/{g['id']}/")["attempts"]
        out[g["name"]] = {k: v for k, v in chain[-1]["jobs"].items() if v} if chain else {}
    return out


def sql_progress(campaign_id: int) -> dict[str, tuple[int, int]]:
    """Step → (finished jobs of its groups' current attempts, planned jobs of its groups); cluster
    jobs are not counted (their members are)."""
    rows = sql(
        """SELECT s.name,
                  (SELECT COUNT(*) FROM campaigns_group g
                     JOIN campaigns_groupattempt a ON a.group_id = g.id AND a.attempt = g.attempt
                     JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
                    WHERE g.step_id = s.id AND j.jobstatus = 'finished'
                      AND NOT EXISTS (SELECT 1 FROM dispatcher_job m WHERE m.cluster_id = j.pandaid)),
                  (SELECT COALESCE(SUM(g.jobs_total), 0) FROM campaigns_group g WHERE g.step_id = s.id)
             FROM campaigns_step s WHERE s.campaign_id = %s ORDER BY s.position""",
        [campaign_id],
    )
    return {name: (int(done), int(total)) for name, done, total in rows}


def sql_attempts(campaign_id: int) -> dict[str, list[tuple[int, str]]]:
    """Job name → its attempts (attemptnr, status), for every job that ran."""
    out: dict[str, list[tuple[int, str]]] = {}
    for name, nr, status in sql(
        """SELECT j.name, t.attemptnr, t.jobstatus FROM campaigns_group g
           JOIN campaigns_groupattempt a ON a.group_id = g.id
           JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
           JOIN dispatcher_jobattempt t ON t.job_id = j.pandaid
           WHERE g.campaign_id = %s ORDER BY j.name, t.attemptnr""",
        [campaign_id],
    ):
        out.setdefault(name, []).append((nr, status))
    return out


def attempt_rows(job: str, attemptnr: int) -> tuple[Any, ...]:
    """(transexitcode, retry_action, retry_reason) of one attempt of the job named `job`."""
    [row] = sql(
        """SELECT t.transexitcode, t.retry_action, t.retry_reason FROM dispatcher_jobattempt t
           JOIN dispatcher_job j ON j.pandaid = t.job_id WHERE j.name = %s AND t.attemptnr = %s""",
        [job, attemptnr],
    )
    return row


def sql_status(campaign_id: int) -> tuple[str, dict[str, str]]:
    [(campaign,)] = sql("SELECT status FROM campaigns_campaign WHERE id = %s", [campaign_id])
    steps = dict(sql("SELECT name, status FROM campaigns_step WHERE campaign_id = %s", [campaign_id]))
    return campaign, steps


def served(api: Api, server: AiluroServer, campaign_id: int) -> dict[str, Any]:
    """What the API and the page's ?json show: groups per state, step and campaign progress."""
    detail = api.call(f"/api/v1/campaigns/{campaign_id}/")
    page = api.call(f"/campaign/{campaign_id}/?json")
    assert page["progress"] == detail["progress"]
    assert page["groups"] == detail["groups"]
    for step_api, step_page in zip(detail["steps"], page["steps"], strict=True):
        assert step_api["status"] == step_page["status"]
        assert [(g["name"], g["status"], g["jobs_done"], g["jobs_total"]) for g in step_api["groups"]] == [
            (g["name"], g["status"], g["jobs_done"], g["jobs_total"]) for g in step_page["groups"]
        ]
    return {
        "status": detail["status"],
        "groups": detail["groups"],
        "steps": {s["name"]: s["status"] for s in detail["steps"]},
        "step_progress": {
            s["name"]: (s["progress"]["jobs_done"], s["progress"]["jobs_total"]) for s in detail["steps"]
        },
        "progress": (
            detail["progress"]["jobs_done"],
            detail["progress"]["jobs_total"],
            detail["progress"]["percent"],
        ),
        "group_status": {(s["name"], g["name"]): g["status"] for s in detail["steps"] for g in s["groups"]},
    }


# --- the test --------------------------------------------------------------------------------------

STEP1_ISR_OK = {"finished": 179, "failed": 1}
STEP1_CALIBRATE_OK = {"finished": 179, "pruned": 1}
STEP1_CLUSTERS_OK = {"finished": 179, "failed": 1}  # cluster 7_2 failed for good
STEP1_JOBS_OK = {"isr": STEP1_ISR_OK, "calibrate": STEP1_CALIBRATE_OK, CLUSTER: STEP1_CLUSTERS_OK}


def test_the_dp02_campaign_runs_end_to_end_with_one_retry_and_one_failure_for_good(tmp_path: Path) -> None:
    started = time.monotonic()
    QueueFactory(name=QUEUE, max_rss_mb=64000)
    operator = UserFactory(username="operator")
    api_token = token_create(username=operator.username, role="operator")
    markers, out = tmp_path / "markers", tmp_path / "out"
    markers.mkdir()
    out.mkdir()
    (markers / f"once-{ONCE[0]}-{ONCE[1]}-{ONCE[2]}").touch()
    (markers / f"fail-{FOR_GOOD[0]}-{FOR_GOOD[1]}-{FOR_GOOD[2]}").touch()
    spec = dp02_spec_text(commands=commands(markers, out), step1_extra=STEP1_CLUSTER)

    (tmp_path / "server").mkdir()
    server = AiluroServer(tmp_path / "server", {"AILURO_LOOP_PERIODS": LOOP_PERIODS})
    server.start()
    api = Api(server.url, api_token)
    fleet = Fleet(server, tmp_path)
    try:
        with celery_loops(tmp_path) as loop_logs:
            logs = [*loop_logs, server.tmp / "server.log"]
            campaign_id = api.call("/api/v1/campaigns/", {"spec": spec})["id"]
            launched = api.call(f"/api/v1/campaigns/{campaign_id}/launch/", {})
            assert launched["message"] == "launched: 3 steps, 44 groups", launched

            # Stage 1: step 1 settles — 19 groups accepted, visit-7 failed; nothing of step 2 runs.
            def step1_settled() -> bool:
                fleet.keep_running()
                return sql_groups(campaign_id).get("step1") == {"accepted": 19, "failed": 1}

            wait_until(step1_settled, what="step 1 settled", timeout=150, logs=[*logs, *fleet.logs])
            time.sleep(3)  # a few more advancer rounds: nothing may move while visit-7 is failed
            stage1 = served(api, server, campaign_id)
            assert sql_groups(campaign_id) == {
                "step1": {"accepted": 19, "failed": 1},
                "step2": {"waiting": 20},
                "step3": {"waiting": 4},
            }
            assert stage1["groups"] == {"total": 44, "accepted": 19, "running": 0, "failed": 1}
            assert stage1["group_status"][("step1", "visit-7")] == "failed"
            assert sql_status(campaign_id) == (
                "running",
                {"step1": "running", "step2": "waiting", "step3": "waiting"},
            )
            assert (stage1["status"], stage1["steps"]) == (
                "running",
                {"step1": "running", "step2": "waiting", "step3": "waiting"},
            )
            # Members per label and state, cluster jobs per state, and both under their labels.
            assert sql_members(campaign_id) == {"isr": STEP1_ISR_OK, "calibrate": STEP1_CALIBRATE_OK}
            assert sql_clusters(campaign_id) == STEP1_CLUSTERS_OK
            assert sql_jobs(campaign_id) == STEP1_JOBS_OK
            assert counted_jobs(campaign_id) == sql_jobs(campaign_id)
            # Per group, the jobs of its workflow: 18 members and 9 cluster jobs.
            by_group = group_jobs_served(api, campaign_id, "step1")
            assert by_group.pop("visit-7") == {"finished": 24, "failed": 2, "pruned": 1}
            assert by_group == {f"visit-{v}": {"finished": 27} for v in range(1, 21) if v != 7}
            progress1 = {"step1": (358, 360), "step2": (0, 20), "step3": (0, 24)}
            assert sql_progress(campaign_id) == progress1
            assert stage1["step_progress"] == progress1
            assert stage1["progress"] == (358, 404, 88)
            attempts = sql_attempts(campaign_id)
            assert attempts["calibrate_3_5"] == [(1, "failed"), (2, "finished")]
            assert attempts[f"{CLUSTER}_3_5"] == [(1, "failed"), (2, "finished")]
            assert attempts["isr_3_5"] == [(1, "finished")]  # its cluster's retry did not rerun it
            assert attempts["isr_7_2"] == [(1, "failed")]
            assert attempts[f"{CLUSTER}_7_2"] == [(1, "failed")]
            assert "calibrate_7_2" not in attempts  # pruned: never ran
            assert {name for name, a in attempts.items() if len(a) > 1} == {"calibrate_3_5", f"{CLUSTER}_3_5"}
            # 360 member attempts (180 isr, 178 calibrate once, calibrate 3/5 twice) and 181 of clusters.
            assert sum(len(a) for a in attempts.values()) == 360 + 181
            # The retry decisions are the cluster job's; its members carry their own exit codes.
            assert attempt_rows(f"{CLUSTER}_3_5", 1)[:2] == (137, "increase_memory")
            assert attempt_rows(f"{CLUSTER}_3_5", 1)[2].startswith("rule oom-exit-137:")
            assert attempt_rows("calibrate_3_5", 1)[0] == 137
            assert attempt_rows(f"{CLUSTER}_7_2", 1) == (
                1,
                "no_retry",
                "rule payload-error: deterministic error",
            )
            assert attempt_rows("isr_7_2", 1)[0] == 1
            # What each cluster attempt ran, from its payload's member markers: the retry of 3/5 ran
            # calibrate only; cluster 7/2 skipped calibrate after isr failed.
            [(cluster35,)] = sql("SELECT pandaid FROM dispatcher_job WHERE name = %s", [f"{CLUSTER}_3_5"])
            assert cluster_results(cluster35, 1) == {"isr_3_5": 0, "calibrate_3_5": 137}
            assert cluster_results(cluster35, 2) == {"calibrate_3_5": 0}
            [(cluster72,)] = sql("SELECT pandaid FROM dispatcher_job WHERE name = %s", [f"{CLUSTER}_7_2"])
            assert cluster_results(cluster72, 1) == {"isr_7_2": 1, "calibrate_7_2": None}
            # isr wrote each output once (it appends): isr 3/5 ran once.
            assert {p.read_text() for p in out.glob("postisr_*")} == {"isr\n"}
            assert len(list(out.glob("postisr_*"))) == 179
            visit7 = dict(
                sql(
                    """SELECT j.name, j.jobstatus FROM campaigns_group g
                       JOIN campaigns_groupattempt a ON a.group_id = g.id
                       JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
                       WHERE g.campaign_id = %s AND g.name = 'visit-7' AND a.attempt = 1""",
                    [campaign_id],
                )
            )
            assert visit7 == {
                **{
                    f"{label}_7_{d}": "finished"
                    for label in ("isr", "calibrate", CLUSTER)
                    for d in range(9)
                    if d != 2
                },
                "isr_7_2": "failed",
                "calibrate_7_2": "pruned",
                f"{CLUSTER}_7_2": "failed",
            }
            # The other clusters' outputs are there; the failed detector's are not.
            for kind in ("postisr", "calexp"):
                assert sorted(p.name for p in out.glob(f"{kind}_7_*")) == [
                    f"{kind}_7_{d}" for d in range(9) if d != 2
                ]
            assert not (out / "postisr_7_2").exists()
            assert not any(out.glob("summary_*"))

            # Stage 2: the operator accepts visit-7 with its partial outputs; step 1 is done and
            # step 2 is submitted whole in the same advancer round. The pilots (idle: nothing is
            # activated) are stopped first, so step 2 is seen submitted and not yet run.
            fleet.stop()
            [(visit7_id,)] = sql(
                "SELECT id FROM campaigns_group WHERE campaign_id = %s AND name = 'visit-7' AND step_id = "
                "(SELECT id FROM campaigns_step WHERE campaign_id = %s AND name = 'step1')",
                [campaign_id, campaign_id],
            )
            accepted = api.call(f"/api/v1/campaign-groups/{visit7_id}/accept/", {})
            assert accepted["message"] == "accepted with 2 jobs without outputs", accepted
            assert (accepted["missing_outputs"], accepted["missing"]) == (2, ["calibrate_7_2", "isr_7_2"])
            wait_until(
                lambda: sql_status(campaign_id)[1]["step1"] == "done",
                what="step 1 done",
                timeout=30,
                logs=logs,
            )
            stage2 = served(api, server, campaign_id)
            assert sql_groups(campaign_id) == {
                "step1": {"accepted": 20},
                "step2": {"running": 20},
                "step3": {"waiting": 4},
            }
            assert stage2["groups"] == {"total": 44, "accepted": 20, "running": 20, "failed": 0}
            assert sql_status(campaign_id) == (
                "running",
                {"step1": "done", "step2": "running", "step3": "waiting"},
            )
            assert (stage2["status"], stage2["steps"]) == (
                "running",
                {"step1": "done", "step2": "running", "step3": "waiting"},
            )
            progress2 = {"step1": (358, 360), "step2": (0, 20), "step3": (0, 24)}
            assert sql_progress(campaign_id) == progress2
            assert stage2["step_progress"] == progress2
            assert stage2["progress"] == (358, 404, 88)
            summaries = sql_jobs(campaign_id).pop("visit_summary")
            assert sum(summaries.values()) == 20 and set(summaries) <= {"defined", "activated"}, summaries

            # Stage 3: steps 2 and 3 run; the campaign ends done.
            def campaign_done() -> bool:
                fleet.keep_running()
                return sql_status(campaign_id)[0] == "done"

            wait_until(campaign_done, what="the campaign done", timeout=150, logs=[*logs, *fleet.logs])
            end = served(api, server, campaign_id)
            end_by_group = {step: group_jobs_served(api, campaign_id, step) for step in ("step2", "step3")}
    finally:
        fleet.stop()
        server.stop()

    assert sql_groups(campaign_id) == {
        "step1": {"accepted": 20},
        "step2": {"accepted": 20},
        "step3": {"accepted": 4},
    }
    assert end["groups"] == {"total": 44, "accepted": 44, "running": 0, "failed": 0}
    assert sql_status(campaign_id) == ("done", {"step1": "done", "step2": "done", "step3": "done"})
    assert (end["status"], end["steps"]) == ("done", {"step1": "done", "step2": "done", "step3": "done"})
    assert sql_members(campaign_id) == {"isr": STEP1_ISR_OK, "calibrate": STEP1_CALIBRATE_OK}
    assert sql_clusters(campaign_id) == STEP1_CLUSTERS_OK
    assert sql_jobs(campaign_id) == {
        **STEP1_JOBS_OK,
        "visit_summary": {"finished": 20},
        "make_warp": {"finished": 12},
        "assemble_coadd": {"finished": 12},
    }
    assert counted_jobs(campaign_id) == sql_jobs(campaign_id)
    assert end_by_group == {
        "step2": {f"visit-{v}": {"finished": 1} for v in range(1, 21)},
        "step3": {f"tract-0_patch-{p}": {"finished": 6} for p in range(4)},
    }
    progress_end = {"step1": (358, 360), "step2": (20, 20), "step3": (24, 24)}
    assert sql_progress(campaign_id) == progress_end
    assert end["step_progress"] == progress_end
    assert end["progress"] == (402, 404, 99)
    attempts = sql_attempts(campaign_id)
    assert {name for name, a in attempts.items() if len(a) > 1} == {"calibrate_3_5", f"{CLUSTER}_3_5"}
    assert sum(len(a) for a in attempts.values()) == 360 + 181 + 20 + 24

    # Every group ran one attempt: the retry of calibrate 3/5 was the dispatcher's (its cluster
    # job's), inside visit-3's workflow; visit-7 was recovered by the accept, not by a new attempt.
    assert sql("SELECT DISTINCT attempt FROM campaigns_group WHERE campaign_id = %s", [campaign_id]) == [(1,)]
    audit = sql(
        """SELECT l.actor, l.verb, l.result, l.message FROM campaigns_actionlog l
           WHERE l.campaign_id = %s AND l.object_type = 'group' AND l.object_id = %s ORDER BY l.id""",
        [campaign_id, visit7_id],
    )
    assert audit == [
        ("advancer", "fail", "ok", "attempt 1: 2 jobs without outputs"),
        ("operator", "accept", "ok", "accepted with 2 jobs without outputs"),
    ]
    assert sql(
        "SELECT verb, object_type FROM campaigns_actionlog WHERE campaign_id = %s AND actor = 'advancer' "
        "AND verb IN ('fail', 'complete') ORDER BY id",
        [campaign_id],
    ) == [("fail", "group"), ("complete", "campaign")]

    # Step 2's visit-7 ran over the 8 detectors step 1 produced; every other visit over 9.
    assert {v: int((out / f"summary_{v}").read_text()) for v in range(1, 21)} == {
        v: 8 if v == 7 else 9 for v in range(1, 21)
    }
    # The step-3 groups that gather visit 7 ran in full, like the others.
    upstream = dict(
        sql(
            """SELECT g.name, g.upstream FROM campaigns_group g JOIN campaigns_step s ON s.id = g.step_id
               WHERE g.campaign_id = %s AND s.name = 'step3'""",
            [campaign_id],
        )
    )
    with_visit7 = sorted(name for name, ups in upstream.items() if "visit-7" in ups)
    assert with_visit7 == ["tract-0_patch-2", "tract-0_patch-3"]
    assert with_visit7 == sorted(
        f"tract-0_patch-{r['patch']}" for r in DP02_OVERLAPS if 7 in r["visit"] and r["band"] == "g"
    )
    assert all(end["group_status"][("step3", name)] == "accepted" for name in upstream)
    assert sorted(p.name for p in out.glob("coadd_*")) == sorted(
        f"coadd_0_{p}_{b}" for p in range(4) for b in "gri"
    )
    assert time.monotonic() - started < 240, f"took {time.monotonic() - started:.0f} s"
