"""Pause and resume a workflow (JEDI's pauseTask / resumeTask): held jobs leave the queues, nothing
new is brokered, running jobs finish, resume brings everything back. Services, API and CLI."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from ailuro.cli import main
from core.services import token_create
from dispatcher.models import Job, JobStatusLog, Task, Workflow
from dispatcher.queries import workflow_state_counts
from dispatcher.services import (
    NewJob,
    WorkflowInvalid,
    broker_one_batch,
    job_attempt_end,
    job_transition,
    workflow_cancel,
    workflow_pause,
    workflow_resume,
    workflow_submit,
)
from dispatcher.services.transitions import task_counts_fold
from tests.factories import QueueFactory, UserFactory

pytestmark = pytest.mark.django_db


def _workflow(owner_name: str = "alice") -> Workflow:
    """Three independent `a` jobs, each with a `b` child, and a lone `c` job."""
    jobs = [NewJob(name=f"a{i}", label="a", command="a") for i in range(3)]
    jobs += [NewJob(name=f"b{i}", label="b", command="b", parents=[f"a{i}"]) for i in range(3)]
    jobs.append(NewJob(name="c", label="c", command="c"))
    return workflow_submit(owner=UserFactory(username=owner_name), name="w", jobs=jobs)


def _states(workflow: Workflow) -> dict[str, str]:
    return dict(Job.objects.filter(workflow=workflow).values_list("name", "jobstatus"))


def _run(name: str, workflow: Workflow) -> Job:
    job = Job.objects.get(workflow=workflow, name=name)
    job_transition(pandaid=job.pandaid, to="sent", cause="test getJob")
    job_transition(pandaid=job.pandaid, to="running", cause="test pilot")
    return job


def test_pause_takes_activated_jobs_back_and_brokerage_leaves_them_until_resume() -> None:
    QueueFactory(name="Q")
    wf = _workflow()
    assert broker_one_batch(limit=100) == 4  # a0-a2 and c
    running = _run("a0", wf)

    assert workflow_pause(workflow_id=wf.pk, actor="alice") == {"paused_tasks": 3, "held": 3}

    assert _states(wf) == {
        "a0": "running",
        "a1": "defined",
        "a2": "defined",
        "b0": "defined",
        "b1": "defined",
        "b2": "defined",
        "c": "defined",
    }
    assert Job.objects.filter(workflow=wf, jobstatus="defined", queue__isnull=False).count() == 0
    assert set(Task.objects.filter(workflow=wf).values_list("status", flat=True)) == {"paused"}
    assert Workflow.objects.get(pk=wf.pk).status == "paused"
    assert JobStatusLog.objects.filter(cause="paused by alice", jobstatus="defined").count() == 3
    # The running job finishes; its child is released but not brokered while paused.
    job_attempt_end(pandaid=running.pandaid, attemptnr=running.attemptnr, status="finished", cause="pilot")
    assert Job.objects.get(workflow=wf, name="b0").pending_parents == 0
    assert broker_one_batch(limit=100) == 0
    task_counts_fold()
    assert workflow_state_counts(wf.pk) == {"defined": 6, "finished": 1}

    assert workflow_resume(workflow_id=wf.pk, actor="alice") == {"resumed_tasks": 3}
    assert broker_one_batch(limit=100) == 4  # a1, a2, b0, c
    assert Workflow.objects.get(pk=wf.pk).status == "running"
    assert set(Task.objects.filter(workflow=wf).values_list("status", flat=True)) == {"running"}


def test_pausing_one_label_holds_only_its_task() -> None:
    QueueFactory(name="Q")
    wf = _workflow()

    assert workflow_pause(workflow_id=wf.pk, actor="operator", labels=["c"]) == {"paused_tasks": 1, "held": 0}

    assert broker_one_batch(limit=100) == 3
    assert _states(wf)["c"] == "defined"
    assert Workflow.objects.get(pk=wf.pk).status != "paused"
    assert workflow_resume(workflow_id=wf.pk, actor="operator", labels=["c"]) == {"resumed_tasks": 1}
    assert broker_one_batch(limit=100) == 1


def test_pause_refuses_unknown_labels_and_ended_workflows() -> None:
    wf = _workflow()
    with pytest.raises(WorkflowInvalid, match="no label 'x'") as unknown:
        workflow_pause(workflow_id=wf.pk, actor="operator", labels=["x"])
    assert unknown.value.status_code == 400
    workflow_cancel(workflow_id=wf.pk, actor="operator")
    with pytest.raises(WorkflowInvalid, match="nothing to pause") as ended:
        workflow_pause(workflow_id=wf.pk, actor="operator")
    assert ended.value.status_code == 409
    assert not Task.objects.filter(status="paused").exists()


def _api(username: str, role: str = "user") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username=username, role=role)}")
    return client


def test_the_api_pauses_and_resumes_for_the_owner_only() -> None:
    wf = _workflow()
    pause = reverse("dispatcher:workflow-pause", args=[wf.pk])

    assert _api("mallory").post(pause, {}, format="json").status_code == 403
    assert Workflow.objects.get(pk=wf.pk).status != "paused"
    response = _api("alice").post(pause, {"labels": ["a"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"workflow": wf.pk, "paused_tasks": 1, "held": 0}
    bad = _api("alice").post(pause, {"labels": "a"}, format="json")
    assert (bad.status_code, bad.json()["field"]) == (400, "labels")
    resume = _api("alice").post(reverse("dispatcher:workflow-resume", args=[wf.pk]), {}, format="json")
    assert resume.json() == {"workflow": wf.pk, "resumed_tasks": 1}


@pytest.mark.django_db(transaction=True)
def test_the_cli_pauses_and_resumes(live_server, monkeypatch, capsys) -> None:
    wf = _workflow()
    monkeypatch.setenv("AILURO_URL", live_server.url)
    monkeypatch.setenv("AILURO_TOKEN", token_create(username="alice", role="user"))

    assert main(["pause", str(wf.pk), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["paused_tasks"] == 3
    assert main(["resume", str(wf.pk)]) == 0
    assert capsys.readouterr().out.strip() == f"workflow {wf.pk}: resumed: resumed_tasks 3"
    assert main(["resume", str(wf.pk)]) == 0  # nothing paused: a no-op, not an error
