"""Every number true, everywhere: on random workloads built through the real services (random DAG
workflows of several labels; per job finished, failed and retried then finished, failed for good
with its descendants pruned, cancelled waiting or running, or left running / activated / defined;
workflows retried or restarted by their owner; workflows run three days ago; optionally a campaign
with a failed group, judged by the advancer or not yet, or restarted), every count of every page
family's `?json` and of the REST API (which the CLI prints) equals an independent SQL count over
the tables, and every progress figure equals finished / total (failed and pruned never counted as
done), over the last 48 hours and over a closed window in the past — before the loops fold the
counters and the change feed, between partial folds, and after (task and workflow states then
derived from the same counts: `done` only when every job finished).

The oracle is raw SQL written here against the tables (`dispatcher_job`, `dispatcher_jobattempt`,
`dispatcher_task`, `dispatcher_workflow`, `harvester_worker`, `campaigns_group`,
`campaigns_groupattempt`), never the product's reads. PostgreSQL only: the rollups and the change
feed exist there (and the oracle's SQL uses its interval syntax). The definitions checked are the
table "What the numbers mean" of docs/operator-guide/monitoring.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import Group, GroupAttempt
from campaigns.services import campaign_create, campaign_launch, group_restart
from core.services import token_create
from dispatcher.loops import rollup_one_batch
from dispatcher.models import Job, Task
from dispatcher.services import (
    NewJob,
    job_attempt_end,
    job_transition,
    task_counts_fold,
    workflow_cancel,
    workflow_restart,
    workflow_retry,
    workflow_submit,
)
from dispatcher.states import JOB_FINAL, JobStatus
from pandamon import rollups
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import BAD, OK, pilots_run
from tests.factories import QueueFactory, SiteFactory, UserFactory, WorkerFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the rollups and change feed are PostgreSQL's"
    ),
]

USERS = ("alice", "bob")
QUEUES = {"CERN_Q": ("CERN", "EU"), "CERN_HIMEM": ("CERN", "EU"), "SLAC_Q": ("SLAC", "US")}
# What happens to a job once its parents let it run (a job whose parents never finish stays
# defined, or is pruned when one of them fails for good; `cancel` cancels it whatever its state).
OUTCOMES = (
    "finished",
    "retry",
    "retry_fail",
    "fail",
    "cancel",
    "cancel_running",
    "running",
    "activated",
    "defined",
)
FINAL_NAMES = {s.value for s in JOB_FINAL}
RESTARTABLE = ("failed", "cancelled", "pruned")
WINDOW = {"hours": "48"}
# The oracle's form of that window: jobs that changed state in it; active jobs whatever their age.
IN_WINDOW = "statechangetime >= NOW() - INTERVAL '48 hours'"
PAST = "{column} >= NOW() - INTERVAL '4 days' AND {column} < NOW() - INTERVAL '1 day'"
SHOWN = f"(jobstatus NOT IN ('finished', 'failed', 'cancelled', 'closed', 'pruned') OR {IN_WINDOW})"

# One workflow: owner, then per label (after the first) the width and, per job, its parents in the
# previous label as bits; an outcome and a queue per job.
LABEL = st.tuples(st.integers(1, 3), st.lists(st.integers(0, 7), min_size=3, max_size=3))
WORKFLOW = st.tuples(
    st.integers(0, 1),
    st.lists(LABEL, min_size=1, max_size=3),
    st.lists(st.tuples(st.sampled_from(OUTCOMES), st.sampled_from(sorted(QUEUES))), min_size=9, max_size=9),
    st.integers(0, 2).map(lambda n: n == 0),
    st.sampled_from(["", "", "retry", "restart"]),
)
WORKLOAD = st.lists(WORKFLOW, min_size=1, max_size=3)


@dataclass
class Built:
    workflows: list[int] = field(default_factory=list)
    campaign: int | None = None


def _sql(query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return list(cursor.fetchall())


def _run(pandaid: int, queue: str, *, until: str) -> None:
    """Drive a released job through brokerage, dispatch and the pilot's reports."""
    job_transition(pandaid=pandaid, to="activated", cause="test brokerage", fields={"queue_id": queue})
    if until == "activated":
        return
    job_transition(
        pandaid=pandaid,
        to="sent",
        cause="test getJob",
        fields={"node": f"wn-{queue.lower()}", "dispatched_at": timezone.now()},
    )
    job_transition(pandaid=pandaid, to="running", cause="test pilot", fields={})


def _end(pandaid: int, status: str, errors: dict[str, Any]) -> str:
    attemptnr = Job.objects.values_list("attemptnr", flat=True).get(pk=pandaid)
    outcome = job_attempt_end(
        pandaid=pandaid,
        attemptnr=attemptnr,
        status=status,
        cause="test pilot final update",
        errors=errors,
        metrics={"max_rss_kb": 1_000_000},
    )
    assert outcome is not None
    return outcome.status


TRANSIENT = {"piloterrorcode": 1201, "piloterrordiag": "Lost heartbeat from wn7 after 7200 s"}
DETERMINISTIC = {"exeerrorcode": 65, "exeerrordiag": "ValueError: bad input in /data/raw/123.fits"}


def _workflow(index: int, spec: tuple[Any, ...]) -> int:
    owner, labels, outcomes, aged, rerun = spec
    user = UserFactory._meta.model.objects.get(username=USERS[owner])
    jobs: list[NewJob] = []
    previous: list[str] = []
    for k, (width, parent_bits) in enumerate(labels):
        names = [f"w{index}_l{k}_{i}" for i in range(width)]
        for i, name in enumerate(names):
            parents = [p for b, p in enumerate(previous) if parent_bits[i] >> b & 1]
            jobs.append(NewJob(name=name, label=f"label{k}", command="true", parents=parents))
        previous = names
    wf = workflow_submit(owner=user, name=f"wf{index}", jobs=jobs)
    plan = {
        j.pandaid: outcomes[n % len(outcomes)]
        for n, j in enumerate(Job.objects.filter(workflow=wf).order_by("pandaid"))
    }
    # Cancel the jobs chosen for it while they wait.
    waiting = [p for p, (o, _) in plan.items() if o == "cancel"]
    if waiting:
        workflow_cancel(workflow_id=wf.pk, actor=user.username, pandaids=waiting)
    retried: set[int] = set()
    while True:
        ready = list(
            Job.objects.filter(workflow=wf, jobstatus=JobStatus.DEFINED, pending_parents=0)
            .exclude(pandaid__in=[p for p, (o, _) in plan.items() if o == "defined"])
            .order_by("pandaid")
            .values_list("pandaid", flat=True)
        )
        if not ready:
            break
        for pandaid in ready:
            outcome, queue = plan[pandaid]
            if outcome == "activated":
                _run(pandaid, queue, until="activated")
                plan[pandaid] = ("defined", queue)  # never again
                continue
            _run(pandaid, queue, until="running")
            if outcome in ("running", "cancel_running"):
                if outcome == "cancel_running":
                    workflow_cancel(workflow_id=wf.pk, actor=user.username, pandaids=[pandaid])
                plan[pandaid] = ("defined", queue)
                continue
            if outcome in ("retry", "retry_fail") and pandaid not in retried:
                retried.add(pandaid)
                assert _end(pandaid, "failed", TRANSIENT) == JobStatus.DEFINED
                continue  # back to defined at attempt 2: the next wave runs it again
            if outcome in ("fail", "retry_fail"):
                assert _end(pandaid, "failed", DETERMINISTIC) == JobStatus.FAILED
            else:
                assert _end(pandaid, "finished", {}) == JobStatus.FINISHED
            plan[pandaid] = ("defined", queue)
    # The owner re-runs what failed (retry: failed jobs and the jobs pruned because of them;
    # restart: failed, cancelled and pruned), one set-based transition; some of it runs again.
    if rerun == "retry" and Job.objects.filter(workflow=wf, jobstatus=JobStatus.FAILED).exists():
        workflow_retry(workflow_id=wf.pk, actor=user.username)
    elif rerun == "restart" and Job.objects.filter(workflow=wf, jobstatus__in=RESTARTABLE).exists():
        workflow_restart(workflow_id=wf.pk, actor=user.username)
    if rerun:
        for pandaid in Job.objects.filter(
            workflow=wf, jobstatus=JobStatus.DEFINED, pending_parents=0
        ).values_list("pandaid", flat=True)[:2]:
            _run(pandaid, plan[pandaid][1], until="running")
            _end(pandaid, "finished", {})
    if aged:
        # A workflow run three days ago: its jobs last changed state before the pages' window, its
        # still-active ones included (a manual UPDATE, which the change feed's trigger records).
        Job.objects.filter(workflow=wf).update(statechangetime=timezone.now() - timedelta(days=3))
        Task.objects.filter(workflow=wf).update(modified_at=timezone.now() - timedelta(days=3))
    return int(wf.pk)


def _build(workload: list[tuple[Any, ...]], campaign: str | None) -> Built:
    for username in USERS:
        UserFactory(username=username)
    sites: dict[str, Any] = {}
    queues: dict[str, Any] = {}
    for name, (site, region) in QUEUES.items():
        if site not in sites:
            sites[site] = SiteFactory(name=site, region=region)
        queues[name] = QueueFactory(name=name, site=sites[site], max_rss_mb=64000)
    WorkerFactory(queue=queues["CERN_Q"], status="running")
    WorkerFactory(queue=queues["SLAC_Q"], status="submitted")
    built = Built()
    for index, spec in enumerate(workload):
        built.workflows.append(_workflow(index, spec))
    if campaign is not None:
        operator = UserFactory(username="operator")
        judged = campaign
        campaign = campaign_create(owner=operator, spec_yaml=spec_text(name="numbers", n=4, size=2))
        campaign_launch(campaign_id=campaign.pk, actor="operator")
        campaigns_advance_one_round()
        wfs = list(
            GroupAttempt.objects.filter(group__campaign=campaign).values_list("workflow_id", flat=True)
        )
        pilots_run(queue="CERN_Q", workflow_ids=wfs, outcome=lambda j: BAD if j.name == "isr_3" else OK)
        if judged != "unjudged":  # else the advancer has not looked at the ended jobs yet
            campaigns_advance_one_round()
        if judged == "restarted":
            # The operator restarts the failed groups: their failed and pruned jobs run again.
            for group_id in Group.objects.filter(campaign=campaign, status="failed").values_list(
                "pk", flat=True
            ):
                group_restart(group_id=group_id, actor="operator")
        built.campaign = campaign.pk
    return built


# --- the oracle: raw SQL over the tables ------------------------------------------------------------


def _counts(where: str = "TRUE", params: list[Any] | None = None, key: str = "jobstatus") -> dict[Any, Any]:
    rows = _sql(
        f"SELECT {key}, jobstatus, COUNT(*) FROM dispatcher_job WHERE {where} GROUP BY {key}, jobstatus",  # noqa: S608
        params,
    )
    if key == "jobstatus":
        return {s: int(n) for s, _, n in rows}
    out: dict[Any, dict[str, int]] = defaultdict(dict)
    for k, s, n in rows:
        out[k][s] = int(n)
    return dict(out)


def _progress(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    pct = {s: 100 * counts.get(s, 0) / total if total else 0.0 for s in ("finished", "failed", "pruned")}
    return {"total": total, **{f"{s}_pct": v for s, v in pct.items()}}


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# --- the checks ---------------------------------------------------------------------------------------


def _check_overview(client: Client) -> None:
    data = client.get("/", {"json": "1", **WINDOW}).json()
    # Jobs by state: placed jobs (a queue), active ones whatever their age, final ones in the window.
    assert _nonzero(data["jobs_by_state"]) == _counts(f"computingsite IS NOT NULL AND {SHOWN}")
    by_wf = _counts(key="workflow_id")
    for wf in data["workflows"]:
        assert _nonzero(wf["counts"]) == by_wf.get(wf["id"], {}), wf
    by_queue = _counts(f"computingsite IS NOT NULL AND {SHOWN}", key="computingsite")
    for row in data["queues"]:
        assert _nonzero(row["counts"]) == by_queue.get(row["name"], {}), row


def _check_jobs(client: Client, window: dict[str, str] = WINDOW, in_window: str = IN_WINDOW) -> None:
    """/jobs/ over a window, `in_window` its SQL form: total, facets, and each state's filter."""
    data = client.get("/jobs/", {"json": "1", **window}).json()
    total = _sql(f"SELECT COUNT(*) FROM dispatcher_job WHERE {in_window}")[0][0]  # noqa: S608
    assert data["total"] == total
    facets = {name: dict(map(tuple, rows)) for name, rows in data["facets"].items()}
    assert facets["jobstatus"] == _counts(in_window)
    for name, column in (
        ("computingsite", "computingsite"),
        ("produsername", "produsername"),
        ("jeditaskid", "jeditaskid"),
        ("attemptnr", "attemptnr"),
        ("workflow", "workflow_id"),
        ("label", "label"),
        ("exeerrorcode", "exeerrorcode"),
        ("piloterrorcode", "piloterrorcode"),
    ):
        if name not in facets:
            continue
        expected = {
            str(v) if v is not None else None: int(n)
            for v, n in _sql(
                f"SELECT {column}, COUNT(*) FROM dispatcher_job WHERE {in_window} GROUP BY {column}"  # noqa: S608
            )
        }
        got = {str(v) if v is not None else None: n for v, n in facets[name].items()}
        if name.endswith("code"):
            expected.pop("0", None)  # a code facet lists the jobs with an error code
        assert got == expected, name
    # Each facet's values add up to the total (a job has one value of each).
    assert sum(facets["jobstatus"].values()) == total
    # A state filter in the window answers the count of its facet value; an active state without
    # a window (the default one dropped) counts its jobs whatever their age.
    in_window = _counts(in_window)
    for state, n in _counts().items():
        filtered = client.get("/jobs/", {"json": "1", **window, "jobstatus": state}).json()
        assert filtered["total"] == in_window.get(state, 0), state
        if state not in FINAL_NAMES and window is WINDOW:
            assert client.get("/jobs/", {"json": "1", "jobstatus": state}).json()["total"] == n, state


def _check_tasks(client: Client, api: dict[str, str]) -> None:
    by_task = _counts(key="jeditaskid")
    tasks = _sql("SELECT jeditaskid, status, username FROM dispatcher_task")
    data = client.get("/tasks/", {"json": "1"}).json()
    assert dict(map(tuple, data["facets"]["status"])) == dict(Counter(s for _, s, _ in tasks))
    assert dict(map(tuple, data["facets"]["username"])) == dict(Counter(u for _, _, u in tasks))
    assert sorted(t["jeditaskid"] for t in data["tasks"]) == sorted(t for t, _, _ in tasks)
    for t in data["tasks"]:
        assert _nonzero(t["counts"]) == by_task.get(t["jeditaskid"], {}), t
    api_list = client.get("/api/v1/tasks/", {"limit": 1000}, **api).json()
    rows = api_list.get("results", api_list)
    for t in rows:
        assert _nonzero(t["counts"]) == by_task.get(t["jeditaskid"], {}), t
    # Filtered: one user's tasks, one workflow's, one label's (and their facets).
    for name, column, value in (
        ("username", "username", USERS[0]),
        (
            "workflow",
            "workflow_id",
            str(min(wf for (wf,) in _sql("SELECT workflow_id FROM dispatcher_task"))),
        ),
        ("label", "label", "label0"),
    ):
        mine = dict(
            _sql(
                f"SELECT jeditaskid, status FROM dispatcher_task WHERE {column}::text = %s",  # noqa: S608
                [value],
            )
        )
        page = client.get("/tasks/", {"json": "1", name: value}).json()
        assert sorted(t["jeditaskid"] for t in page["tasks"]) == sorted(mine), name
        assert dict(map(tuple, page["facets"]["status"])) == dict(Counter(mine.values())), name
        for t in page["tasks"]:
            assert _nonzero(t["counts"]) == by_task.get(t["jeditaskid"], {}), t
    attempts = _failed_attempts()
    for jeditaskid, _, _ in tasks:
        page = client.get(f"/task/{jeditaskid}/", {"json": "1"}).json()
        expected = by_task.get(jeditaskid, {})
        assert _nonzero(page["counts"]) == expected, jeditaskid
        assert page["progress"] == pytest.approx(_progress(expected)), jeditaskid
        mine = [a for a in attempts if a["task"] == jeditaskid]
        by_key: Counter[str] = Counter()
        for a in mine:
            for key in a["keys"]:
                by_key[key] += 1
        assert {g["key"]: g["count"] for g in page["top_errors"]} == dict(by_key), jeditaskid
        # The histograms count the task's finished and failed jobs.
        ended = sum(expected.get(s, 0) for s in ("finished", "failed"))
        assert sum(n for _, _, n in page["histograms"]["walltime_min"]) <= ended
        assert sum(n for _, _, n in page["histograms"]["max_rss_mb"]) == ended
        detail = client.get(f"/api/v1/tasks/{jeditaskid}/", **api).json()
        assert _nonzero(detail["counts"]) == expected, jeditaskid


def _check_workflows(client: Client, api: dict[str, str], built: Built) -> None:
    by_wf = _counts(key="workflow_id")
    by_task = _counts(key="jeditaskid")
    data = client.get("/workflows/", {"json": "1"}).json()
    all_ids = sorted(r[0] for r in _sql("SELECT id FROM dispatcher_workflow"))
    assert sorted(w["id"] for w in data["workflows"]) == all_ids
    for wf in data["workflows"]:
        expected = by_wf.get(wf["id"], {})
        assert _nonzero(wf["counts"]) == expected, wf
        p = _progress(expected)
        assert wf["finished_pct"] == pytest.approx(p["finished_pct"]), wf
        assert wf["failed_pct"] == pytest.approx(p["failed_pct"]), wf
    api_list = client.get("/api/v1/workflows/", {"limit": 1000}, **api).json()
    for wf in api_list.get("results", api_list):
        assert _nonzero(wf["counts"]) == by_wf.get(wf["id"], {}), wf
    for user in USERS:
        owned = {
            wf
            for (wf,) in _sql(
                "SELECT w.id FROM dispatcher_workflow w JOIN auth_user u ON u.id = w.owner_id WHERE u.username = %s",
                [user],
            )
        }
        page = client.get("/workflows/", {"json": "1", "username": user}).json()
        assert {w["id"] for w in page["workflows"]} == owned, user
        listed = client.get("/api/v1/workflows/", {"limit": 1000, "produsername": user}, **api).json()
        assert {w["id"] for w in listed.get("results", listed)} == owned, user
        for wf in page["workflows"]:
            assert _nonzero(wf["counts"]) == by_wf.get(wf["id"], {}), wf
    for wf_id in all_ids:
        page = client.get(f"/workflow/{wf_id}/", {"json": "1"}).json()
        expected = by_wf.get(wf_id, {})
        assert _nonzero(page["counts"]) == expected, wf_id
        for t in page["tasks"]:
            assert _nonzero(t["counts"]) == by_task.get(t["jeditaskid"], {}), t
        for node in page["nodes"]:
            c = by_task.get(node["id"], {})
            done = f"{c.get('finished', 0)}/{sum(c.values())} done, {c.get('failed', 0)} failed"
            assert node["text"].endswith(done), node
            # Green only when every job finished; red as soon as one failed.
            if c.get("failed"):
                assert node["state"] == "failed", node
            elif c and c.get("finished", 0) + c.get("closed", 0) == sum(c.values()):
                assert node["state"] == "finished", node
            else:
                assert node["state"] not in ("finished", "failed"), node
        detail = client.get(f"/api/v1/workflows/{wf_id}/", **api).json()
        assert _nonzero(detail["counts"]) == expected, wf_id
        for t in detail["tasks"]:
            assert _nonzero(t["counts"]) == by_task.get(t["jeditaskid"], {}), t
        report = client.get(f"/api/v1/workflows/{wf_id}/report/", **api).json()
        assert report["total"]["total"] == sum(expected.values())
        assert _nonzero({k: v for k, v in report["total"].items() if k != "total"}) == expected
        by_label = _counts("workflow_id = %s", [wf_id], key="label")
        for row in report["labels"]:
            got = _nonzero({s: row[s] for s in JobStatus.values})
            assert got == by_label.get(row["label"], {}), row
            assert row["total"] == sum(got.values())


def _failed_attempts(ended: str = "TRUE") -> list[dict[str, Any]]:
    families = (
        ("pilot", "piloterrorcode"),
        ("exe", "exeerrorcode"),
        ("trans", "transexitcode"),
        ("ddm", "ddmerrorcode"),
        ("jobdispatcher", "jobdispatchererrorcode"),
        ("sup", "superrorcode"),
        ("taskbuffer", "taskbuffererrorcode"),
    )
    columns = ", ".join(f"a.{c}" for _, c in families)
    rows = _sql(
        f"""SELECT j.jeditaskid, a.computingsite, j.produsername, {columns}
            FROM dispatcher_jobattempt a JOIN dispatcher_job j ON j.pandaid = a.job_id
            WHERE a.jobstatus = 'failed' AND {ended}"""  # noqa: S608
    )
    return [
        {
            "task": task,
            "queue": queue,
            "user": user,
            "keys": [f"{f}:{code}" for (f, _), code in zip(families, codes, strict=True) if code],
        }
        for task, queue, user, *codes in rows
    ]


def _check_errors(client: Client, window: dict[str, str] = WINDOW, ended: str = "TRUE") -> None:
    """/errors/ over a window, `ended` its SQL form on the attempt's end."""
    attempts = _failed_attempts(ended.replace("endtime", "a.endtime"))
    data = client.get("/errors/", {"json": "1", **window}).json()
    assert data["failed_attempts"] == len(attempts)
    for split, key in (("by_site", "queue"), ("by_task", "task"), ("by_user", "user")):
        assert {str(v): n for v, n in data[split]} == {
            str(k): n for k, n in Counter(a[key] for a in attempts).items()
        }, split
    by_key: Counter[str] = Counter(k for a in attempts for k in a["keys"])
    got: Counter[str] = Counter()
    for g in data["errors"]:
        got[g["key"]] += g["count"]
    assert got == by_key


def _check_dash_and_sites(client: Client, window: dict[str, str], in_window: str) -> None:
    """/dash/, /sites/ and /site/<name>/ over a window, `in_window` its SQL form."""
    shown = f"(jobstatus NOT IN ('finished', 'failed', 'cancelled', 'closed', 'pruned') OR {in_window})"
    by_queue = _counts(f"computingsite IS NOT NULL AND {shown}", key="computingsite")
    workers = _sql(
        """SELECT q.name, w.status, COUNT(*) FROM harvester_worker w JOIN dispatcher_queue q ON q.id = w.queue_id
           WHERE w.status IN ('submitted', 'running') GROUP BY q.name, w.status"""
    )
    workers_by_queue: dict[str, dict[str, int]] = defaultdict(dict)
    for q, s, n in workers:
        workers_by_queue[q][s] = int(n)

    def failure_pct(c: dict[str, int]) -> float | None:
        f, d = c.get("failed", 0), c.get("finished", 0)
        return 100 * f / (f + d) if f + d else None

    dash = client.get("/dash/", {"json": "1", **window}).json()
    for row in dash["queues"]:
        expected = by_queue.get(row["name"], {})
        assert _nonzero(row["counts"]) == expected, row
        assert row["total"] == sum(expected.values())
        assert row["failure_pct"] == pytest.approx(failure_pct(expected)), row
        assert row["workers"] == workers_by_queue.get(row["name"], {}), row
    for level, of_queue in (("sites", lambda q: QUEUES[q][0]), ("regions", lambda q: QUEUES[q][1])):
        summed: dict[str, Counter[str]] = defaultdict(Counter)
        for q, c in by_queue.items():
            summed[of_queue(q)].update(c)
        for row in dash[level]:
            assert _nonzero(row["counts"]) == dict(summed.get(row["name"], {})), (level, row)
            assert row["failure_pct"] == pytest.approx(failure_pct(dict(summed.get(row["name"], {}))))
    sites = client.get("/sites/", {"json": "1", **window}).json()
    for row in sites["queues"]:
        expected = by_queue.get(row["name"], {})
        assert _nonzero(row["counts"]) == expected, row
        assert row["failure_pct"] == pytest.approx(failure_pct(expected)), row
    nodes = _counts(
        f"jobstatus IN ('finished', 'failed') AND modificationhost <> '' AND {in_window}",
        key="modificationhost",
    )
    for site in ("CERN", "SLAC"):
        page = client.get(f"/site/{site}/", {"json": "1", **window}).json()
        for row in page["queues"]:
            expected = by_queue.get(row["queue"], {})
            assert (row["finished"], row["failed"]) == (
                expected.get("finished", 0),
                expected.get("failed", 0),
            )
            assert row["failure_pct"] == pytest.approx(failure_pct(expected)), row
        shown = {row["queue"] for row in page["queues"]}
        assert shown == {
            q for q, c in by_queue.items() if QUEUES[q][0] == site and (c.get("finished") or c.get("failed"))
        }
        site_queues = {q for q in QUEUES if QUEUES[q][0] == site}
        site_nodes = {n for n in nodes if n.removeprefix("wn-").upper() in site_queues}
        assert {r["node"] for r in page["worker_nodes"]} == site_nodes
        for row in page["worker_nodes"]:
            c = nodes[row["node"]]
            assert (row["finished"], row["failed"]) == (c.get("finished", 0), c.get("failed", 0)), row


def _check_users(client: Client, window: dict[str, str], modified: str) -> None:
    """/users/ and /user/<name>/: the users' tasks modified in the window (`modified`, its SQL)."""
    per_task_user = dict(_sql(f"SELECT jeditaskid, username FROM dispatcher_task WHERE {modified}"))  # noqa: S608
    by_task = _counts(key="jeditaskid")
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    tasks_of: Counter[str] = Counter()
    for task, user in per_task_user.items():
        tasks_of[user] += 1
        per_user[user].update(by_task.get(task, {}))
    data = client.get("/users/", {"json": "1", **window}).json()
    assert {u["username"] for u in data["users"]} == set(tasks_of)
    for u in data["users"]:
        expected = dict(per_user[u["username"]])
        assert u["tasks"] == tasks_of[u["username"]]
        assert _nonzero(u["counts"]) == _nonzero(expected), u
        p = _progress(expected)
        assert (u["total"], u["finished_pct"], u["failed_pct"], u["pruned_pct"]) == pytest.approx(
            (p["total"], p["finished_pct"], p["failed_pct"], p["pruned_pct"])
        ), u
        page = client.get(f"/user/{u['username']}/", {"json": "1", **window}).json()
        assert _nonzero(page["counts"]) == _nonzero(expected)
        assert sorted(t["jeditaskid"] for t in page["tasks"]) == sorted(
            t for t, user in per_task_user.items() if user == u["username"]
        )
        for t in page["tasks"]:
            assert _nonzero(t["counts"]) == by_task.get(t["jeditaskid"], {}), t


def _check_campaign(client: Client, api: dict[str, str], campaign: int) -> None:
    groups = _sql("SELECT id, status, attempt FROM campaigns_group WHERE campaign_id = %s", [campaign])
    statuses = Counter(s for _, s, _ in groups)
    expected_groups = {
        "total": len(groups),
        "accepted": statuses["accepted"],
        "running": statuses["running"],
        "failed": statuses["failed"],
    }
    listed = {c["id"]: c for c in client.get("/campaigns/", {"json": "1"}).json()["results"]}
    assert listed[campaign]["groups"] == expected_groups
    page = client.get(f"/campaign/{campaign}/", {"json": "1"}).json()
    assert page["groups"] == expected_groups
    assert client.get(f"/api/v1/campaigns/{campaign}/", **api).json()["groups"] == expected_groups
    # Per group: its current attempt's workflow; done = finished jobs of it (never failed or pruned).
    total = done = 0
    for group in (g for step in page["steps"] for g in step["groups"]):
        rows = _sql(
            """SELECT j.jobstatus, COUNT(*) FROM campaigns_groupattempt a
               JOIN campaigns_group g ON g.id = a.group_id AND g.attempt = a.attempt
               JOIN dispatcher_job j ON j.workflow_id = a.workflow_id
               WHERE g.id = %s GROUP BY j.jobstatus""",
            [group["id"]],
        )
        c = {s: int(n) for s, n in rows}
        n_total = sum(c.values()) or group["jobs_total"]
        assert group["jobs_total"] == n_total, group
        assert group["jobs_done"] == c.get("finished", 0), group
        assert group["percent"] == (100 * c.get("finished", 0) // n_total if n_total else 0), group
        total += n_total
        done += c.get("finished", 0)
        shown = client.get(f"/campaign/group/{group['id']}/", {"json": "1"}).json()
        assert shown["jobs_done"] == group["jobs_done"]
        assert shown["percent"] == group["percent"]
        for attempt in shown["attempts"]:
            assert attempt["jobs"] == _counts("workflow_id = %s", [attempt["workflow_id"]]), attempt
    assert page["progress"]["jobs_total"] == total
    assert page["progress"]["jobs_done"] == done
    assert page["progress"]["percent"] == (100 * done // total if total else 0)


def _check_all(client: Client, api: dict[str, str], built: Built) -> None:
    _check_overview(client)
    _check_tasks(client, api)
    _check_workflows(client, api, built)
    # The last 48 hours (the whole workload but the aged workflows), then a closed window in the
    # past (from four days ago to one day ago: the aged workflows; active jobs whatever their age).
    past = {
        f"date_{k}": f"{timezone.now() - timedelta(days=d):%Y-%m-%dT%H:%M:%S}"
        for k, d in (("from", 4), ("to", 1))
    }
    for window, sql in ((WINDOW, "{column} >= NOW() - INTERVAL '48 hours'"), (past, PAST)):
        _check_jobs(client, window, sql.format(column="statechangetime"))
        _check_errors(client, window, sql.format(column="endtime"))
        _check_dash_and_sites(client, window, sql.format(column="statechangetime"))
        _check_users(client, window, sql.format(column="modified_at"))
    if built.campaign is not None:
        _check_campaign(client, api, built.campaign)


def _jedi_status(c: dict[str, int]) -> str:
    """A task's status from its jobs (docs/architecture.md): `done` only when every job finished."""
    total = sum(c.values())
    if not total:
        return "ready"
    if any(s not in FINAL_NAMES for s in c):
        return "ready" if c.get("defined", 0) == total else "running"
    if c.get("cancelled", 0) == total:
        return "aborted"
    finished = c.get("finished", 0) + c.get("closed", 0)
    return "done" if finished == total else "finished" if finished else "failed"


def _check_statuses(client: Client) -> None:
    """After the rollup loop: every task's and workflow's status is the one its job counts give."""
    by_task = _counts(key="jeditaskid")
    for t in client.get("/tasks/", {"json": "1"}).json()["tasks"]:
        assert t["status"] == _jedi_status(by_task.get(t["jeditaskid"], {})), t
    by_wf = _counts(key="workflow_id")
    of_task = {"ready": "submitted", "aborted": "cancelled"}
    for wf in client.get("/workflows/", {"json": "1"}).json()["workflows"]:
        if wf["status"] in ("cancelled",) and by_wf.get(wf["id"], {}).keys() - FINAL_NAMES:
            continue  # a workflow cancelled as a whole is marked at once; its jobs follow
        status = _jedi_status(by_wf.get(wf["id"], {}))
        assert wf["status"] == of_task.get(status, status), wf


def _fold() -> None:
    while rollup_one_batch():
        pass
    if rollups.enabled():
        while rollups.monitor_one_batch():
            pass


class TestEveryNumberTrue(HypothesisTestCase):
    @given(
        workload=WORKLOAD,
        campaign=st.sampled_from([None, "judged", "unjudged", "restarted"]),
        partial=st.sampled_from([0, 0, 1, 3, 7]),
    )
    @settings(
        max_examples=30,
        deadline=None,
        # No shrinking: one example builds a whole world through the services (about a second), so
        # shrinking a failure takes minutes; the failing example is printed as generated.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    def test_every_count_equals_its_sql_count(
        self, workload: list[tuple[Any, ...]], campaign: str | None, partial: int
    ) -> None:
        built = _build(workload, campaign)
        api = {"HTTP_AUTHORIZATION": f"Bearer {token_create(username='numbers-operator', role='operator')}"}
        # Before any loop folded the counters and the change feed: exact from the unfolded deltas.
        _check_all(self.client, api, built)
        # Partly folded: a few counter deltas and change rows folded, the rest not yet.
        if partial:
            task_counts_fold(batch=partial)
            rollups.rollups_fold(batch=partial)
            _check_all(self.client, api, built)
        # After the rollup and monitor loops folded them (task and workflow states derived too) and
        # the advancer judged the groups.
        _fold()
        if built.campaign is not None:
            campaigns_advance_one_round()
            _fold()
        _check_all(self.client, api, built)
        _check_statuses(self.client)
