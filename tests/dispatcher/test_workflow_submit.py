from __future__ import annotations

import pytest
from django.utils import timezone

from dispatcher.models import Job, JobDependency, Task, Workflow
from dispatcher.queries import workflow_state_counts
from dispatcher.services import NewJob, WorkflowInvalid, dag_find_cycle, workflow_submit
from tests.factories import UserFactory


def test_find_cycle_names_the_loop() -> None:
    assert dag_find_cycle({"a": [], "b": ["a"], "c": ["b"]}) is None
    cycle = dag_find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


@pytest.mark.django_db
def test_submit_writes_tasks_jobs_edges_and_counters() -> None:
    owner = UserFactory()
    jobs = [
        NewJob(name="a", label="isr", command="true"),
        NewJob(name="b", label="isr", command="true"),
        NewJob(name="c", label="coadd", command="true", parents=["a", "b"]),
    ]

    wf = workflow_submit(owner=owner, name="w", jobs=jobs)

    assert Task.objects.filter(workflow=wf).count() == 2
    assert dict(Job.objects.filter(workflow=wf).values_list("name", "pending_parents")) == {
        "a": 0,
        "b": 0,
        "c": 2,
    }
    assert JobDependency.objects.filter(child__workflow=wf).count() == 2
    assert workflow_state_counts(wf.pk) == {"defined": 3}


@pytest.mark.django_db
def test_text_with_copy_escapes_is_stored_as_given() -> None:
    """Backslash, tab, newline and carriage return are COPY's escapes on PostgreSQL: each text
    column keeps them as given, next to text that needs no escaping."""
    odd = "a\\b\tc\nd\re \\N \\t"
    jobs = [
        NewJob(
            name=f"odd{odd}",
            label=f"lab{odd}",
            command=f"echo '{odd}'",
            environment={"K": odd},
            container_image=f"img{odd}",
            data_id={"v": odd},
        ),
        NewJob(name="plain", label="plain", command="echo plain", parents=[f"odd{odd}"]),
    ]
    wf = workflow_submit(owner=UserFactory(username=f"u{odd}"), name="w", jobs=jobs)
    rows = {
        row[0]: row[1:]
        for row in Job.objects.filter(workflow=wf).values_list(
            "name", "label", "command", "environment", "container_image", "data_id", "produsername"
        )
    }
    assert rows == {
        f"odd{odd}": (f"lab{odd}", f"echo '{odd}'", {"K": odd}, f"img{odd}", {"v": odd}, f"u{odd}"),
        "plain": ("plain", "echo plain", {}, "", {}, f"u{odd}"),
    }


@pytest.mark.django_db
def test_submitted_jobs_enter_the_monitor_time_window_at_once(client) -> None:  # type: ignore[no-untyped-def]
    before = timezone.now()
    wf = workflow_submit(
        owner=UserFactory(),
        name="fresh",
        jobs=[NewJob(name=f"j{i}", label="isr", command="true") for i in range(3)],
    )

    stamps = set(Job.objects.filter(workflow=wf).values_list("statechangetime", "creationtime"))
    assert len(stamps) == 1
    [(changed, created)] = stamps
    assert changed == created and changed >= before
    listed = client.get("/jobs/?hours=1&json=1").json()
    assert listed["facets"]["jobstatus"] == [["defined", 3]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([], "at least one job"),
        (
            [NewJob(name="a", label="x", command="t"), NewJob(name="a", label="x", command="t")],
            "duplicate job name 'a'",
        ),
        ([NewJob(name="a", label="x", command="t", parents=["zz"])], "unknown job 'zz'"),
        (
            [
                NewJob(name="a", label="x", command="t", parents=["b"]),
                NewJob(name="b", label="x", command="t", parents=["a"]),
            ],
            "dependency cycle",
        ),
    ],
)
def test_invalid_workflows_write_nothing(jobs: list[NewJob], message: str) -> None:
    with pytest.raises(WorkflowInvalid, match=message):
        workflow_submit(owner=UserFactory(), name="bad", jobs=jobs)
    assert not Workflow.objects.exists()
