"""Final jobs: run once every other job of the workflow has ended, whatever the outcome
(dispatcher.services.final_jobs). Runs on PostgreSQL and on SQLite (DATABASE_URL=sqlite:///…): the
finished fast path is PostgreSQL's, the generic path SQLite's; both must release the final job."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from dispatcher.models import Job, Workflow
from dispatcher.queries import workflow_state_counts
from dispatcher.services import (
    WorkflowInvalid,
    broker_one_batch,
    job_transition,
    workflow_cancel,
    workflow_restart,
    workflow_retry,
    workflow_submit_spec,
)
from dispatcher.services.pilot_calls import PilotUpdate, UpdateReply, jobs_pilot_update_bulk
from dispatcher.services.rollup import statuses_rollup
from dispatcher.services.transitions import task_counts_fold
from dispatcher.states import JobStatus, WorkflowStatus, workflow_status_derive
from dispatcher.workflows import spec_parse
from tests.factories import QueueFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_retry_rules")]

# a → b → c, a → d; "report" is final.
SPEC: dict[str, Any] = {
    "name": "with-final",
    "jobs": [
        {"name": "a", "label": "step1", "command": "true"},
        {"name": "b", "label": "step2", "command": "true", "depends_on": ["a"]},
        {"name": "c", "label": "step3", "command": "true", "depends_on": ["b"]},
        {"name": "d", "label": "step2", "command": "true", "depends_on": ["a"]},
        {"name": "report", "label": "finalJob", "command": "true", "final": True},
    ],
}


def _submit(spec: dict[str, Any] | None = None) -> tuple[int, dict[str, int]]:
    wf = workflow_submit_spec(owner=UserFactory(), spec=spec or SPEC)
    return wf.pk, dict(Job.objects.filter(workflow=wf).values_list("name", "pandaid"))


def _job(pandaid: int) -> Job:
    return Job.objects.get(pk=pandaid)


def _start(pandaid: int) -> None:
    """Place (if not yet placed), dispatch and start the job, as brokerage and a pilot do."""
    if _job(pandaid).jobstatus == JobStatus.DEFINED:
        assert broker_one_batch() >= 1
    job_transition(
        pandaid=pandaid,
        to=JobStatus.SENT,
        cause="pilot",
        fields={"dispatched_at": timezone.now(), "lease": "l"},
    )
    job_transition(pandaid=pandaid, to=JobStatus.RUNNING, cause="pilot", fields={"starttime": timezone.now()})


def _end(pandaid: int, status: str) -> None:
    """The pilot's final update through the real pilot call (the finished fast path on
    PostgreSQL); a failure says exit code 2, which the default rules do not retry."""
    errors = {"transexitcode": 2, "exeerrorcode": 2} if status == JobStatus.FAILED else {}
    update = PilotUpdate(
        pandaid=pandaid, status=status, attemptnr=_job(pandaid).attemptnr, lease="l", errors=errors
    )
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=None)
    assert isinstance(reply, UpdateReply) and reply.status == status


def _run(pandaid: int, status: str = JobStatus.FINISHED) -> None:
    _start(pandaid)
    _end(pandaid, status)


def _waiting(pandaid: int) -> bool:
    job = _job(pandaid)
    return job.jobstatus == JobStatus.DEFINED and job.pending_parents == 1


def test_submission_writes_the_final_job_waiting_without_edges() -> None:
    wf, ids = _submit()
    report = _job(ids["report"])
    assert report.is_final and report.pending_parents == 1 and report.jobstatus == JobStatus.DEFINED
    assert not report.parent_edges.exists() and not report.child_edges.exists()
    assert Workflow.objects.get(pk=wf).final_jobs == 1
    assert not Job.objects.filter(workflow_id=wf, is_final=True).exclude(name="report").exists()


def test_the_final_job_waits_while_others_run_and_runs_after_all_finished() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"])
    _run(ids["b"])
    _run(ids["d"])
    assert _waiting(ids["report"])
    _start(ids["c"])
    assert _waiting(ids["report"])  # c is running
    assert broker_one_batch() == 0
    _end(ids["c"], JobStatus.FINISHED)
    assert _job(ids["report"]).pending_parents == 0
    # The workflow is not done while its final job is pending.
    task_counts_fold()
    assert workflow_status_derive(WorkflowStatus.RUNNING, workflow_state_counts(wf)) == WorkflowStatus.RUNNING
    _run(ids["report"])
    assert workflow_state_counts(wf) == {"finished": 5}


def test_after_a_failure_for_good_the_descendants_are_pruned_and_the_final_job_runs() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"])
    _run(ids["d"])
    _run(ids["b"], JobStatus.FAILED)
    assert _job(ids["c"]).jobstatus == JobStatus.PRUNED
    report = _job(ids["report"])
    assert (report.jobstatus, report.pending_parents) == (JobStatus.DEFINED, 0)
    _run(ids["report"])
    assert workflow_state_counts(wf) == {"finished": 3, "failed": 1, "pruned": 1}
    statuses_rollup(limit=100, now=timezone.now())
    assert Workflow.objects.get(pk=wf).status == WorkflowStatus.FINISHED


def test_a_failure_of_the_first_job_prunes_everything_but_the_final_job() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"], JobStatus.FAILED)
    assert workflow_state_counts(wf) == {"failed": 1, "pruned": 3, "defined": 1}
    assert _job(ids["report"]).pending_parents == 0
    assert broker_one_batch() == 1
    assert _job(ids["report"]).jobstatus == JobStatus.ACTIVATED


def test_a_cancelled_workflow_cancels_its_final_job() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"])
    _start(ids["b"])
    assert workflow_cancel(workflow_id=wf, actor="alice") == {"cancelled": 4}
    assert _job(ids["report"]).jobstatus == JobStatus.CANCELLED
    assert broker_one_batch() == 0


def test_cancelling_the_other_jobs_releases_the_final_job() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"])
    workflow_cancel(workflow_id=wf, actor="alice", labels=["step2", "step3"])
    assert _job(ids["report"]).pending_parents == 0


def test_a_restart_makes_the_final_job_wait_and_run_again_after_the_rerun_jobs() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"])
    _run(ids["d"])
    _run(ids["b"], JobStatus.FAILED)
    _run(ids["report"])
    assert _job(ids["report"]).jobstatus == JobStatus.FINISHED

    assert workflow_restart(workflow_id=wf, actor="alice") == {"restarted": 3}  # b, c and report
    report = _job(ids["report"])
    assert (report.jobstatus, report.pending_parents, report.attemptnr) == (JobStatus.DEFINED, 1, 2)
    _run(ids["b"])
    assert _waiting(ids["report"])
    _run(ids["c"])
    assert _job(ids["report"]).pending_parents == 0
    _run(ids["report"])
    assert workflow_state_counts(wf) == {"finished": 5}
    assert list(_job(ids["report"]).attempts.values_list("attemptnr", "jobstatus")) == [
        (1, "finished"),
        (2, "finished"),
    ]


def test_a_retry_makes_a_released_final_job_wait_again() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    _run(ids["a"])
    _run(ids["d"])
    _run(ids["b"], JobStatus.FAILED)
    assert broker_one_batch() == 1  # the final job is placed on a queue
    assert _job(ids["report"]).jobstatus == JobStatus.ACTIVATED

    assert workflow_retry(workflow_id=wf, actor="alice") == {"retried": 1, "unpruned": 1}
    report = _job(ids["report"])
    assert (report.jobstatus, report.pending_parents, report.queue_id) == (JobStatus.DEFINED, 1, None)
    _run(ids["b"])
    _run(ids["c"])
    _run(ids["report"])
    assert workflow_state_counts(wf) == {"finished": 5}


def test_restarting_only_a_failed_final_job_runs_it_at_once() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    for name in ("a", "b", "c", "d"):
        _run(ids[name])
    _run(ids["report"], JobStatus.FAILED)
    assert workflow_restart(workflow_id=wf, actor="alice") == {"restarted": 1}
    assert _job(ids["report"]).pending_parents == 0
    _run(ids["report"])
    assert workflow_state_counts(wf) == {"finished": 5}


def test_the_rollup_releases_a_final_job_a_race_left_waiting() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, ids = _submit()
    # Two last jobs ending at once in two transactions each see the other running: the final job
    # is left waiting with nothing left to run. Written here without the transition services.
    Job.objects.filter(workflow_id=wf, is_final=False).update(jobstatus=JobStatus.FINISHED, pending_parents=0)
    assert _waiting(ids["report"])
    statuses_rollup(limit=100, now=timezone.now())
    assert _job(ids["report"]).pending_parents == 0


def test_the_finished_fast_path_learns_the_workflow_has_final_jobs_in_its_statement(
    django_assert_num_queries: Any,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement finished path is PostgreSQL's")
    QueueFactory(max_rss_mb=8000)
    _, ids = _submit({"jobs": [{"name": "a", "label": "x", "command": "true"}]})
    _start(ids["a"])
    update = PilotUpdate(pandaid=ids["a"], status="finished", attemptnr=1, lease="l")
    with django_assert_num_queries(1):  # a workflow without final jobs pays nothing more
        jobs_pilot_update_bulk(updates=[update], queues=None)


# --- the spec ----------------------------------------------------------------------------------


def _parse(jobs: list[dict[str, Any]], **extra: Any) -> None:
    from dispatcher.services import workflow_validate

    parsed = spec_parse({"jobs": jobs, **extra}, max_jobs=1000, max_edges=1000)
    workflow_validate(parsed.jobs, cluster=parsed.cluster, check_queues=False)


@pytest.mark.parametrize(
    ("jobs", "extra", "field"),
    [
        (
            [{"name": "a", "label": "x", "command": "t"}, {"name": "f", "label": "f", "command": "t", "final": True, "depends_on": ["a"]}],
            {},
            "jobs[1].depends_on",
        ),
        (
            [{"name": "a", "label": "x", "command": "t"}, {"name": "f", "label": "f", "command": "t", "final": True, "depends_on": []}],
            {},
            "jobs[1].depends_on",
        ),
        (
            [{"name": "f", "label": "f", "command": "t", "final": True}, {"name": "a", "label": "x", "command": "t", "depends_on": ["f"]}],
            {},
            "jobs[1].depends_on",
        ),
        ([{"name": "a", "label": "x", "command": "t"}, {"name": "f", "label": "f", "command": "t", "final": "yes"}], {}, "jobs[1].final"),
        ([{"name": "f", "label": "f", "command": "t", "final": True}], {}, "jobs[0].final"),
        (
            [{"name": "a", "label": "x", "command": "t"}]
            + [{"name": f"f{i}", "label": "f", "command": "t", "final": True} for i in range(11)],
            {},
            "jobs[11].final",
        ),
        (
            [{"name": "a", "label": "x", "command": "t"}]
            + [{"name": f"f{i}", "label": "f", "command": "t", "final": True} for i in range(2)],
            {"cluster": {"f": 2}},
            "cluster.f",
        ),
    ],
    ids=["with-parents", "with-empty-depends-on", "as-a-parent", "not-a-boolean", "only-final", "eleven", "clustered"],
)  # fmt: skip
def test_invalid_final_jobs_are_refused_naming_the_field(
    jobs: list[dict[str, Any]], extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(WorkflowInvalid) as refused:
        _parse(jobs, **extra)
    assert refused.value.field == field
    assert refused.value.status_code == 400


def test_ten_final_jobs_are_allowed_and_a_label_cannot_say_final() -> None:
    _parse(
        [{"name": "a", "label": "x", "command": "t"}]
        + [{"name": f"f{i}", "label": "f", "command": "t", "final": True} for i in range(10)]
    )
    with pytest.raises(WorkflowInvalid) as refused:
        spec_parse(
            {"labels": {"x": {"command": "t", "data_ids": [{"v": 1}], "final": True}}},
            max_jobs=10,
            max_edges=10,
        )
    assert refused.value.field == "labels.x.final"


def test_the_published_schema_takes_final_jobs_and_refuses_one_with_parents() -> None:
    import json
    from pathlib import Path

    import jsonschema

    from dispatcher.workflows import spec_from_jobs

    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "docs/reference/workflow-spec.schema.json").read_text()
    )
    jsonschema.validate(SPEC, schema)
    parsed = spec_parse(SPEC, max_jobs=100, max_edges=100)
    rewritten = spec_from_jobs(name=parsed.name, jobs=parsed.jobs, labels=parsed.labels)
    jsonschema.validate(rewritten, schema)
    assert [j["name"] for j in rewritten["jobs"] if j.get("final")] == ["report"]
    assert [j.final for j in spec_parse(rewritten, max_jobs=100, max_edges=100).jobs] == [False] * 4 + [True]
    with_parents = {"jobs": [{"name": "f", "label": "f", "command": "t", "final": True, "depends_on": []}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_parents, schema)


def test_the_api_answers_400_naming_the_field_and_writes_nothing() -> None:
    import json

    from django.urls import reverse

    from tests.dispatcher.test_api_workflows import client_for

    spec = {
        "jobs": [
            {"name": "a", "label": "x", "command": "t"},
            {"name": "f", "label": "f", "command": "t", "final": True, "depends_on": ["a"]},
        ]
    }
    response = client_for("alice").post(
        reverse("dispatcher:workflow-list"), json.dumps(spec), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "jobs[1].depends_on"
    assert "final job" in response.json()["detail"]
    assert not Workflow.objects.exists()
    created = client_for("alice").post(
        reverse("dispatcher:workflow-list"),
        json.dumps({"jobs": [spec["jobs"][0], {"name": "f", "label": "f", "command": "t", "final": True}]}),
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["final_jobs"] == 1


def test_a_late_report_bringing_back_pruned_jobs_makes_a_released_final_job_wait_again() -> None:
    from dispatcher.loops import watcher_one_batch

    QueueFactory(max_rss_mb=8000)
    spec = {**SPEC, "labels": {"step1": {"max_attempts": 1}}}
    wf, ids = _submit(spec)
    _start(ids["a"])
    # The watcher fails a for a lost heartbeat: its descendants are pruned, the final job released.
    assert watcher_one_batch(now=timezone.now() + dt.timedelta(days=1)) == 1
    assert workflow_state_counts(wf) == {"failed": 1, "pruned": 3, "defined": 1}
    assert _job(ids["report"]).pending_parents == 0
    # a's pilot reports finished after all: b, c and d come back, and the final job waits for them.
    update = PilotUpdate(pandaid=ids["a"], status="finished", attemptnr=1, lease="l")
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=None)
    assert isinstance(reply, UpdateReply) and reply.status == JobStatus.FINISHED
    assert _waiting(ids["report"])
    for name in ("b", "d", "c"):
        _run(ids[name])
    assert _job(ids["report"]).pending_parents == 0
