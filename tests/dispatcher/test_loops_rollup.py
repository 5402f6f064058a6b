from __future__ import annotations

import pytest

from dispatcher.loops import rollup_one_batch
from dispatcher.models import Task, TaskCount, TaskCountDelta, Workflow
from dispatcher.queries import task_state_counts
from dispatcher.services import jobs_transition_bulk
from dispatcher.states import task_status_derive, workflow_status_derive
from tests.factories import JobFactory, TaskFactory, WorkflowFactory


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({}, "ready"),
        ({"defined": 3}, "ready"),
        ({"defined": 2, "running": 1}, "running"),
        ({"finished": 3}, "done"),
        ({"finished": 2, "failed": 1}, "finished"),
        ({"finished": 1, "pruned": 2}, "finished"),
        ({"failed": 1, "pruned": 2}, "failed"),
        ({"cancelled": 3}, "aborted"),
    ],
)
def test_task_status_follows_jedi_semantics(counts: dict[str, int], expected: str) -> None:
    assert task_status_derive("running", counts) == expected


def test_a_paused_task_stays_paused_until_its_jobs_are_final() -> None:
    assert task_status_derive("paused", {"defined": 1, "finished": 1}) == "paused"
    assert task_status_derive("paused", {"finished": 2}) == "done"


def test_an_aborted_task_stays_aborted_while_its_jobs_are_being_cancelled() -> None:
    assert task_status_derive("aborted", {"running": 1, "cancelled": 2}) == "aborted"
    assert task_status_derive("aborted", {"finished": 1, "cancelled": 2}) == "aborted"


def test_an_aborted_workflow_reads_cancelled() -> None:
    assert workflow_status_derive("running", {"cancelled": 2}) == "cancelled"
    assert workflow_status_derive("running", {"finished": 1, "failed": 1}) == "finished"


@pytest.mark.django_db
def test_rollup_folds_deltas_and_derives_task_and_workflow_states() -> None:
    workflow = WorkflowFactory()
    good = TaskFactory(workflow=workflow)
    bad = TaskFactory(workflow=workflow)
    [JobFactory(task=good, jobstatus="finished") for _ in range(2)]
    JobFactory(task=bad, jobstatus="finished")
    JobFactory(task=bad, jobstatus="failed")
    exact = task_state_counts([good.pk, bad.pk])

    assert rollup_one_batch() >= 4  # four deltas folded, plus status changes

    assert TaskCountDelta.objects.count() == 0
    assert task_state_counts([good.pk, bad.pk]) == exact
    assert dict(TaskCount.objects.filter(task=bad).values_list("jobstatus", "count")) == {
        "finished": 1,
        "failed": 1,
    }
    assert Task.objects.get(pk=good.pk).status == "done"
    bad_task = Task.objects.get(pk=bad.pk)
    assert bad_task.status == "finished" and bad_task.ended_at is not None
    assert Workflow.objects.get(pk=workflow.pk).status == "finished"


@pytest.mark.django_db
def test_a_second_rollup_changes_nothing() -> None:
    task = TaskFactory()
    JobFactory(task=task, jobstatus="running")
    rollup_one_batch()

    assert rollup_one_batch() == 0
    assert Task.objects.get(pk=task.pk).status == "running"
    assert Workflow.objects.get(pk=task.workflow_id).status == "running"


@pytest.mark.django_db
def test_a_restarted_task_is_reopened_by_the_rollup() -> None:
    task = TaskFactory()
    job = JobFactory(task=task, jobstatus="failed")
    rollup_one_batch()
    assert Task.objects.get(pk=task.pk).status == "failed"

    jobs_transition_bulk(source="failed", to="defined", cause="restart", pandaids=[job.pk])
    rollup_one_batch()

    task.refresh_from_db()
    assert (task.status, task.ended_at) == ("ready", None)
