"""Clusters of member jobs (dispatcher.services.clusters): a cluster job runs its members, each
member keeps its own state, attempts and errors, children outside the cluster wait for their own
parent member, a retry runs only the members that have not finished."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from dispatcher.models import Job, JobAttempt, PayloadLog, RetryRule
from dispatcher.queries import task_state_counts, workflow_state_counts
from dispatcher.services import broker_one_batch, job_transition, workflow_retry, workflow_submit_spec
from dispatcher.services.pilot_calls import PilotUpdate, UpdateReply, jobs_pilot_update_bulk
from dispatcher.services.transitions import task_counts_recompute
from dispatcher.states import JobStatus
from tests.factories import QueueFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_retry_rules")]

# isr → calibrate per visit × detector, clustered per key; bkg after isr and table after every
# calibrate of a visit stay outside the clusters.
SPEC: dict[str, Any] = {
    "name": "clustered",
    "defaults": {"max_attempts": 3},
    "dimensions": {"visit": [1], "detector": [0, 1]},
    "labels": {
        "isr": {"command": "isr {visit} {detector}", "over": ["visit", "detector"]},
        "calibrate": {
            "command": "calibrate {visit} {detector}",
            "over": ["visit", "detector"],
            "after": ["isr"],
        },
        "bkg": {"command": "bkg {visit} {detector}", "over": ["visit", "detector"], "after": ["isr"]},
        "table": {"command": "table {visit}", "over": ["visit"], "after": ["calibrate"]},
    },
    "cluster": {"by": ["visit", "detector"], "labels": ["isr", "calibrate"]},
}
C0, C1 = "isr+calibrate_cluster_1_0", "isr+calibrate_cluster_1_1"


def _jobs(wf: int) -> dict[str, Job]:
    return {j.name: j for j in Job.objects.filter(workflow_id=wf)}


def _states(wf: int) -> dict[str, str]:
    return {name: j.jobstatus for name, j in _jobs(wf).items()}


def _run_cluster(pandaid: int, markers: list[str], status: str, code: int = 0) -> str:
    """Dispatch and start the cluster job, store its payload output, and end it through the real
    pilot call (the finished fast path on PostgreSQL); returns the job's state after."""
    job = Job.objects.get(pk=pandaid)
    if job.jobstatus == JobStatus.DEFINED:
        assert broker_one_batch() >= 1
    job_transition(
        pandaid=pandaid,
        to=JobStatus.SENT,
        cause="pilot",
        fields={"dispatched_at": timezone.now(), "lease": "l"},
    )
    job_transition(pandaid=pandaid, to=JobStatus.RUNNING, cause="pilot", fields={"starttime": timezone.now()})
    text = "".join(f"some output\nailuro-cluster-member {m}\n" for m in markers)
    PayloadLog.objects.create(job_id=pandaid, attemptnr=job.attemptnr, sequence=0, text=text)
    errors = {"transexitcode": code, "exeerrorcode": code} if code else {}
    update = PilotUpdate(pandaid=pandaid, status=status, attemptnr=job.attemptnr, lease="l", errors=errors)
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=None)
    assert isinstance(reply, UpdateReply)
    return reply.status


def test_cross_label_cluster_member_states_retries_and_pruning() -> None:
    QueueFactory(max_rss_mb=8000, max_walltime_s=10**6)
    RetryRule.objects.create(name="exit-7-retries", error_family="exe", code=7, action="retry", order=1)
    wf = workflow_submit_spec(owner=UserFactory(), spec=SPEC).pk
    jobs = _jobs(wf)
    assert len(jobs) == 9  # 7 jobs, 2 clusters
    assert (
        jobs["isr_1_0"].cluster_id == jobs[C0].pandaid
        and jobs["calibrate_1_0"].cluster_id == jobs[C0].pandaid
    )
    assert jobs["bkg_1_0"].cluster_id is None
    assert jobs[C0].task.label == "isr+calibrate_cluster" and jobs[C0].task.max_attempts == 3

    # Brokerage places the two clusters only: members are never dispatched on their own.
    assert broker_one_batch() == 2
    assert set(
        Job.objects.filter(workflow_id=wf, jobstatus=JobStatus.ACTIVATED).values_list("name", flat=True)
    ) == {C0, C1}

    # C0: isr succeeds, calibrate fails with a code the rules retry.
    after = _run_cluster(jobs[C0].pandaid, ["isr_1_0 exit=0", "calibrate_1_0 exit=7"], JobStatus.FAILED, 7)
    assert after == JobStatus.DEFINED
    states = _states(wf)
    assert states["isr_1_0"] == JobStatus.FINISHED
    assert states["calibrate_1_0"] == JobStatus.DEFINED
    assert Job.objects.get(name="calibrate_1_0", workflow_id=wf).attemptnr == 2
    # isr's child outside the cluster is released now, whatever the cluster's fate.
    assert Job.objects.get(name="bkg_1_0", workflow_id=wf).pending_parents == 0
    failed_attempt = JobAttempt.objects.get(job__name="calibrate_1_0", job__workflow_id=wf)
    assert (failed_attempt.jobstatus, failed_attempt.exeerrorcode) == (JobStatus.FAILED, 7)
    command = Job.objects.get(pk=jobs[C0].pandaid).command
    assert "calibrate 1 0" in command and "isr 1 0" not in command  # the retry runs the failed member only

    # C1: isr succeeds, calibrate fails for good: only its descendants are pruned.
    after = _run_cluster(jobs[C1].pandaid, ["isr_1_1 exit=0", "calibrate_1_1 exit=2"], JobStatus.FAILED, 2)
    assert after == JobStatus.FAILED
    states = _states(wf)
    assert (states["isr_1_1"], states["calibrate_1_1"], states["table_1"]) == ("finished", "failed", "pruned")
    assert states["bkg_1_1"] == JobStatus.DEFINED
    member = Job.objects.get(name="calibrate_1_1", workflow_id=wf)
    assert (member.exeerrorcode, member.pending_parents) == (2, 0)

    # C0's second attempt finishes (the finished fast path): calibrate_1_0 finishes.
    assert _run_cluster(jobs[C0].pandaid, ["calibrate_1_0 exit=0"], JobStatus.FINISHED) == JobStatus.FINISHED
    states = _states(wf)
    assert states["calibrate_1_0"] == JobStatus.FINISHED
    assert [
        a.jobstatus
        for a in JobAttempt.objects.filter(job__name="calibrate_1_0", job__workflow_id=wf).order_by(
            "attemptnr"
        )
    ] == ["failed", "finished"]
    assert JobAttempt.objects.filter(job__name="isr_1_0", job__workflow_id=wf).count() == 1
    assert workflow_state_counts(wf) == {
        "finished": 4,
        "failed": 2,
        "pruned": 1,
        "activated": 2,
    }  # bkg placed
    tasks = sorted({j.task_id for j in jobs.values()})
    counted = task_state_counts(tasks)
    for task in tasks:  # the counters stayed exact
        assert {k: v for k, v in counted[task].items() if v} == task_counts_recompute(task_id=task)

    # A retry of the workflow runs the failed member again, in its cluster; isr_1_1 stays finished.
    assert workflow_retry(workflow_id=wf, actor="test") == {"retried": 2, "unpruned": 1}
    states = _states(wf)
    assert (states["isr_1_1"], states["calibrate_1_1"], states[C1], states["table_1"]) == (
        "finished",
        "defined",
        "defined",
        "defined",
    )
    rerun = Job.objects.get(pk=jobs[C1].pandaid)
    assert rerun.pending_parents == 0 and "calibrate 1 1" in rerun.command and "isr 1 1" not in rerun.command
    assert Job.objects.get(name="calibrate_1_1", workflow_id=wf).pending_parents == 1  # held for its cluster
    assert _run_cluster(jobs[C1].pandaid, ["calibrate_1_1 exit=0"], JobStatus.FINISHED) == JobStatus.FINISHED
    assert Job.objects.get(name="table_1", workflow_id=wf).pending_parents == 0


def test_a_failed_cluster_without_markers_fails_its_members_with_its_errors() -> None:
    """PanDA's pilot stores no payload output: a failed attempt fails every unfinished member with
    the cluster's errors; the roots fail, their descendants in the cluster are pruned."""
    QueueFactory(max_rss_mb=8000, max_walltime_s=10**6)
    wf = workflow_submit_spec(owner=UserFactory(), spec=SPEC).pk
    jobs = _jobs(wf)
    assert broker_one_batch() == 2
    assert _run_cluster(jobs[C0].pandaid, [], JobStatus.FAILED, 2) == JobStatus.FAILED
    states = _states(wf)
    assert (states["isr_1_0"], states["calibrate_1_0"], states["bkg_1_0"]) == ("failed", "pruned", "pruned")
    assert Job.objects.get(name="isr_1_0", workflow_id=wf).exeerrorcode == 2


@pytest.mark.parametrize(
    ("cluster", "field"),
    [
        ({"by": ["exposure"], "labels": ["isr", "calibrate"]}, "cluster.by"),
        ({"by": ["visit"], "labels": ["isr", "coadd"]}, "cluster.labels"),
        ({"by": ["visit"], "labels": ["isr"], "max_members": 0}, "cluster.max_members"),
        ({"labels": ["isr"], "target_runtime_s": -5}, "cluster.target_runtime_s"),
        ({"isr": "ten"}, "cluster.isr"),
    ],
)
def test_the_api_refuses_a_bad_cluster_rule_naming_the_field(cluster: dict[str, Any], field: str) -> None:
    import json

    from tests.dispatcher.test_api_workflows import client_for, submit

    spec = {**SPEC, "cluster": cluster}
    response = submit(client_for("alice"), json.dumps(spec), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not Job.objects.exists()


def test_the_api_submits_a_clustered_spec() -> None:
    import json

    from tests.dispatcher.test_api_workflows import client_for, submit

    response = submit(client_for("alice"), json.dumps(SPEC), content_type="application/json")
    assert response.status_code == 201, response.content
    assert Job.objects.filter(cluster__isnull=False).count() == 4
    assert Job.objects.filter(label="isr+calibrate_cluster").count() == 2


def test_cluster_jobs_count_against_the_job_cap(settings: Any) -> None:
    from dispatcher.workflows import WorkflowTooLarge

    settings.AILURO = {**settings.AILURO, "MAX_DAG_JOBS": 8}  # 7 jobs fit, 7 + 2 clusters do not
    with pytest.raises(WorkflowTooLarge, match="9 jobs"):
        workflow_submit_spec(owner=UserFactory(), spec=SPEC)
    workflow_submit_spec(owner=UserFactory(), spec={k: v for k, v in SPEC.items() if k != "cluster"})


def test_a_late_finished_report_of_a_cluster_finishes_its_waiting_members() -> None:
    """The watcher fails a cluster attempt for a lost heartbeat (retried: the members wait); the
    pilot's late `finished` report then finishes the cluster and its members."""
    import datetime as dt

    from dispatcher.loops import watcher_one_batch

    queue = QueueFactory(name="LATE_Q", max_rss_mb=8000, max_walltime_s=10**6)
    wf = workflow_submit_spec(owner=UserFactory(), spec=SPEC).pk
    cluster = _jobs(wf)[C0]
    assert broker_one_batch() == 2
    start = timezone.now() - dt.timedelta(hours=2)
    job_transition(
        pandaid=cluster.pandaid,
        to=JobStatus.SENT,
        cause="pilot",
        fields={"dispatched_at": start, "lease": "l", "queue_id": queue.name},
    )
    job_transition(
        pandaid=cluster.pandaid,
        to=JobStatus.RUNNING,
        cause="pilot",
        fields={"starttime": start, "heartbeat_at": start, "statechangetime": start},
    )
    assert watcher_one_batch(now=timezone.now() + dt.timedelta(days=1)) >= 1
    states = _states(wf)
    assert (states[C0], states["isr_1_0"], states["calibrate_1_0"]) == ("defined", "defined", "defined")
    update = PilotUpdate(pandaid=cluster.pandaid, status="finished", attemptnr=1, lease="l")
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=None)
    assert isinstance(reply, UpdateReply) and reply.status == JobStatus.FINISHED
    states = _states(wf)
    assert (states[C0], states["isr_1_0"], states["calibrate_1_0"]) == ("finished", "finished", "finished")
    assert Job.objects.get(workflow_id=wf, name="bkg_1_0").pending_parents == 0


def test_a_cluster_pruned_by_an_outside_parent_takes_its_waiting_members_and_a_retry_brings_them_back() -> (
    None
):
    """calibrate also needs `prep` (outside the cluster): when prep fails for good, the cluster job
    is pruned, and its members with it (isr too: it runs only inside the cluster), and what
    depends on them; a retry runs prep again and brings the cluster and every member back."""
    QueueFactory(max_rss_mb=8000, max_walltime_s=10**6)
    spec = {
        **SPEC,
        "labels": {
            **SPEC["labels"],
            "prep": {"command": "prep {visit} {detector}", "over": ["visit", "detector"]},
            "calibrate": {**SPEC["labels"]["calibrate"], "after": ["isr", "prep"]},
        },
    }
    wf = workflow_submit_spec(owner=UserFactory(), spec=spec).pk
    jobs = _jobs(wf)
    assert list(Job.objects.get(pk=jobs[C0].pandaid).parent_edges.values_list("parent__name", flat=True)) == [
        "prep_1_0"
    ]
    assert broker_one_batch() == 2  # prep_1_0, prep_1_1: the clusters wait for them
    prep = jobs["prep_1_0"].pandaid
    job_transition(
        pandaid=prep, to=JobStatus.SENT, cause="pilot", fields={"dispatched_at": timezone.now(), "lease": "l"}
    )
    job_transition(pandaid=prep, to=JobStatus.RUNNING, cause="pilot", fields={"starttime": timezone.now()})
    update = PilotUpdate(pandaid=prep, status="failed", attemptnr=1, lease="l", errors={"exeerrorcode": 2})
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=None)
    assert isinstance(reply, UpdateReply) and reply.status == JobStatus.FAILED
    states = _states(wf)
    assert {n: states[n] for n in ("prep_1_0", C0, "isr_1_0", "calibrate_1_0", "bkg_1_0", "table_1")} == {
        "prep_1_0": "failed",
        C0: "pruned",
        "isr_1_0": "pruned",
        "calibrate_1_0": "pruned",
        "bkg_1_0": "pruned",
        "table_1": "pruned",
    }
    assert states[C1] == states["isr_1_1"] == JobStatus.DEFINED  # the other key is untouched

    workflow_retry(workflow_id=wf, actor="test")
    states = _states(wf)
    assert {states[n] for n in ("prep_1_0", C0, "isr_1_0", "calibrate_1_0", "bkg_1_0", "table_1")} == {
        "defined"
    }
    assert Job.objects.get(pk=jobs[C0].pandaid).pending_parents == 1  # waits for prep again
    assert Job.objects.get(pk=jobs["isr_1_0"].pandaid).pending_parents == 1  # held for its cluster
    assert Job.objects.get(pk=jobs["calibrate_1_0"].pandaid).pending_parents == 3  # isr, prep, cluster


def test_the_stored_task_graph_is_the_one_the_job_edges_give() -> None:
    """Members, cluster jobs and the labels outside the clusters: the task graph stored at
    submission is the one derived from the job edges (what a workflow submitted before it was
    stored is read from)."""
    from pandamon.queries.workflows import workflow_task_edges

    wf = workflow_submit_spec(owner=UserFactory(), spec=SPEC)
    assert wf.task_edges  # written by the submission
    stored = workflow_task_edges(wf)
    wf.task_edges = None
    assert workflow_task_edges(wf) == stored
    assert len(set(stored)) == len(stored)
    assert all(a != b for a, b in stored)
