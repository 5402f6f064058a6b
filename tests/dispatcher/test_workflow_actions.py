"""Submission writes and the actions on a workflow, through the services, checked in the database."""

from __future__ import annotations

from collections import Counter

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from dispatcher.models import File, Job, JobAttempt, JobDependency, Task, Workflow
from dispatcher.queries import task_state_counts, workflow_state_counts
from dispatcher.services import (
    NewJob,
    WorkflowInvalid,
    jobs_set_memory,
    task_counts_recompute,
    workflow_boost_priority,
    workflow_cancel,
    workflow_restart,
    workflow_retry,
    workflow_submit,
    workflow_submit_spec,
)
from dispatcher.states import JobStatus
from tests.dispatcher.dag_runner import drain, run_released
from tests.factories import QueueFactory, UserFactory

pytestmark = pytest.mark.django_db


def diamond_chain(width: int = 3) -> list[NewJob]:
    """a_i -> b_i -> c (gather) -> d, for i < width."""
    jobs = []
    for i in range(width):
        jobs.append(NewJob(name=f"a{i}", label="a", command=f"a {i}"))
        jobs.append(NewJob(name=f"b{i}", label="b", command=f"b {i}", parents=[f"a{i}"]))
    jobs.append(NewJob(name="c", label="c", command="c", parents=[f"b{i}" for i in range(width)]))
    jobs.append(NewJob(name="d", label="d", command="d", parents=["c"]))
    return jobs


def attempts(workflow: Workflow) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, status in (
        JobAttempt.objects.filter(job__workflow=workflow)
        .order_by("job__name", "attemptnr")
        .values_list("job__name", "jobstatus")
    ):
        result.setdefault(name, []).append(status)
    return result


def statuses(workflow: Workflow) -> dict[str, str]:
    return dict(Job.objects.filter(workflow=workflow).values_list("name", "jobstatus"))


def counters_are_exact(workflow: Workflow) -> None:
    for task in Task.objects.filter(workflow=workflow):
        folded = task_state_counts([task.jeditaskid])[task.jeditaskid]
        assert folded == task_counts_recompute(task_id=task.jeditaskid)


# --- submission ------------------------------------------------------------------------------


def test_submit_writes_jobs_edges_files_and_counters_in_one_go() -> None:
    owner = UserFactory()
    jobs = diamond_chain()
    jobs[0].files = [{"lfn": "raw.fits", "role": "input", "size": 10}]
    jobs[0].environment = {"A": "1"}
    jobs[0].data_id = {"visit": 7}

    wf = workflow_submit(owner=owner, name="w", jobs=jobs, priority=900)

    rows = {j.name: j for j in Job.objects.filter(workflow=wf)}
    assert len(rows) == 8
    assert rows["c"].pending_parents == 3
    assert rows["a0"].pending_parents == 0
    assert rows["a0"].environment == {"A": "1"}
    assert rows["a0"].data_id == {"visit": 7}
    assert rows["a0"].currentpriority == 900
    assert rows["a0"].produsername == owner.username
    assert rows["a0"].creationtime is not None
    assert rows["a0"].attemptnr == 1
    assert sorted(rows.values(), key=lambda j: j.pandaid)[0].name == "a0"  # pandaids in spec order
    edges = set(JobDependency.objects.filter(child__workflow=wf).values_list("parent__name", "child__name"))
    assert edges == {(p, j.name) for j in jobs for p in j.parents}
    assert File.objects.get(job=rows["a0"]).lfn == "raw.fits"
    assert workflow_state_counts(wf.pk) == {"defined": 8}
    counters_are_exact(wf)


@override_settings(AILURO={**__import__("django.conf").conf.settings.AILURO, "TASK_CHUNK_SIZE": 4})
def test_labels_above_the_chunk_size_are_split_evenly_into_tasks() -> None:
    jobs = [NewJob(name=f"x{i}", label="x", command="t") for i in range(10)]
    jobs.append(NewJob(name="y", label="y", command="t"))

    wf = workflow_submit(owner=UserFactory(), name="chunky", jobs=jobs)

    tasks = Task.objects.filter(workflow=wf).order_by("label", "chunk")
    assert [(t.label, t.chunk, t.jobs.count()) for t in tasks] == [
        ("x", 0, 4),
        ("x", 1, 4),
        ("x", 2, 2),
        ("y", 0, 1),
    ]
    assert [t.name for t in tasks][:2] == ["chunky/x/0", "chunky/x/1"]
    counters_are_exact(wf)


@override_settings(AILURO={**__import__("django.conf").conf.settings.AILURO, "TASK_CHUNK_SIZE": 4})
def test_the_task_graph_joins_every_chunk_once_and_none_to_itself() -> None:
    """x (10 jobs, chained) is split into 3 tasks; y gathers every x job: the stored task graph has
    each chunk's edge to the next chunk and to y once, and no edge of a chunk to itself."""
    jobs = [
        NewJob(name=f"x{i}", label="x", command="t", parents=[f"x{i - 1}"] if i else []) for i in range(10)
    ]
    jobs.append(NewJob(name="y", label="y", command="t", parents=[f"x{i}" for i in range(10)]))

    wf = workflow_submit(owner=UserFactory(), name="chunky", jobs=jobs)

    x0, x1, x2, y = (t.pk for t in Task.objects.filter(workflow=wf).order_by("label", "chunk"))
    assert Workflow.objects.get(pk=wf.pk).task_edges == [[x0, x1], [x0, y], [x1, x2], [x1, y], [x2, y]]


def test_spec_submission_keeps_the_spec_and_label_settings() -> None:
    spec = {
        "name": "from-spec",
        "labels": {
            "isr": {
                "command": "isr {v}",
                "over": {"v": [1, 2]},
                "resources": {"memory_mb": 3000},
                "max_attempts": 7,
            }
        },
        "cluster": {"isr": 2},
    }
    wf = workflow_submit_spec(owner=UserFactory(), spec=spec, workflow_fields={"attempt": 3})

    assert wf.spec == spec
    assert Workflow.objects.get(pk=wf.pk).attempt == 3
    task = Task.objects.get(workflow=wf, label="isr")
    assert (task.memory_mb, task.max_attempts) == (3000, 7)
    # The cluster job's task takes the settings of its members' label.
    cluster_task = Task.objects.get(workflow=wf, label="isr_cluster")
    assert (cluster_task.memory_mb, cluster_task.max_attempts) == (3000, 7)
    job = Job.objects.get(workflow=wf, task=cluster_task)
    assert job.name == "isr_cluster0"
    assert job.data_id["members"] == ["isr_1", "isr_2"]
    assert set(job.members.values_list("name", flat=True)) == {"isr_1", "isr_2"}


def test_requests_no_queue_can_satisfy_are_refused_naming_job_and_limit() -> None:
    QueueFactory(name="Q_SMALL", max_rss_mb=4000)
    jobs = [
        NewJob(name="fine", label="x", command="t"),
        NewJob(name="greedy", label="x", command="t", memory_mb=9000),
    ]
    with pytest.raises(
        WorkflowInvalid, match=r"'greedy' requests memory_mb=9000 .* 4000 \(max_rss_mb of Q_SMALL\)"
    ):
        workflow_submit(owner=UserFactory(), name="w", jobs=jobs)
    assert not Workflow.objects.exists()


def test_a_back_edge_writes_nothing() -> None:
    jobs = diamond_chain()
    jobs[0].parents = ["d"]
    with pytest.raises(WorkflowInvalid, match="dependency cycle: .*a0"):
        workflow_submit(owner=UserFactory(), name="w", jobs=jobs)
    assert not Job.objects.exists()
    assert not Task.objects.exists()


class TestGeneratedDagsInTheDatabase(HypothesisTestCase):
    @given(st.integers(min_value=1, max_value=30), st.data())
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_generated_dags_are_stored_with_exact_edges_and_pending_parents(
        self, n: int, data: st.DataObject
    ) -> None:
        jobs = []
        for i in range(n):
            parents = data.draw(st.sets(st.integers(0, i - 1), max_size=min(i, 4))) if i else set()
            jobs.append(
                NewJob(
                    name=f"n{i}", label=f"l{i % 3}", command="t", parents=[f"n{p}" for p in sorted(parents)]
                )
            )

        wf = workflow_submit(owner=UserFactory(), name="gen", jobs=jobs)

        stored = Counter(
            JobDependency.objects.filter(child__workflow=wf).values_list("child__name", flat=True)
        )
        assert sum(stored.values()) == sum(len(j.parents) for j in jobs)
        assert dict(Job.objects.filter(workflow=wf).values_list("name", "pending_parents")) == {
            j.name: len(j.parents) for j in jobs
        }


# --- restart and retry, checked on attempt rows ------------------------------------------------


def _fail(names: set[str]):  # type: ignore[no-untyped-def]
    def outcome(job: Job) -> str:
        return JobStatus.FAILED if job.name in names and job.attemptnr == 1 else JobStatus.FINISHED

    return outcome


def test_restart_after_partial_failure_reruns_exactly_failed_and_pruned_jobs() -> None:
    queue = QueueFactory()
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain())
    drain(wf.pk, queue, _fail({"b1"}))
    assert statuses(wf) == {
        "a0": "finished", "a1": "finished", "a2": "finished",
        "b0": "finished", "b1": "failed", "b2": "finished",
        "c": "pruned", "d": "pruned",
    }  # fmt: skip

    result = workflow_restart(workflow_id=wf.pk, actor=wf.owner.username)

    assert result == {"restarted": 3}
    rows = {j.name: j for j in Job.objects.filter(workflow=wf)}
    assert (rows["b1"].jobstatus, rows["b1"].attemptnr, rows["b1"].pending_parents) == ("defined", 2, 0)
    assert (rows["c"].attemptnr, rows["c"].pending_parents) == (1, 1)  # never ran: same attempt number
    assert rows["b1"].exeerrorcode == 0
    assert rows["b1"].queue_id is None
    drain(wf.pk, queue, _fail({"b1"}))

    assert set(statuses(wf).values()) == {"finished"}
    assert attempts(wf) == {
        "a0": ["finished"], "a1": ["finished"], "a2": ["finished"],
        "b0": ["finished"], "b1": ["failed", "finished"], "b2": ["finished"],
        "c": ["finished"], "d": ["finished"],
    }  # fmt: skip
    assert Workflow.objects.get(pk=wf.pk).status == "running"
    counters_are_exact(wf)


def test_restart_brings_back_cancelled_jobs_and_never_touches_finished_ones() -> None:
    queue = QueueFactory()
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain())
    drain(wf.pk, queue, _fail(set()))
    wf2 = workflow_submit(owner=wf.owner, name="w2", jobs=diamond_chain())
    assert workflow_cancel(workflow_id=wf2.pk, actor="operator") == {"cancelled": 8}

    assert workflow_restart(workflow_id=wf.pk, actor="operator") == {"restarted": 0}
    assert workflow_restart(workflow_id=wf2.pk, actor="operator") == {"restarted": 8}

    assert set(statuses(wf).values()) == {"finished"}
    assert attempts(wf) == {name: ["finished"] for name in statuses(wf)}
    released = set(Job.objects.filter(workflow=wf2, pending_parents=0).values_list("name", flat=True))
    assert released == {"a0", "a1", "a2"}
    counters_are_exact(wf2)


def test_retry_reruns_failed_jobs_and_unprunes_below_them_but_leaves_cancelled() -> None:
    queue = QueueFactory()
    jobs = diamond_chain()
    jobs.append(NewJob(name="lonely", label="e", command="t"))
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=jobs)
    workflow_cancel(
        actor="operator", workflow_id=wf.pk, pandaids=[Job.objects.get(workflow=wf, name="lonely").pk]
    )
    drain(wf.pk, queue, _fail({"a2"}))
    assert statuses(wf)["b2"] == "pruned"
    assert statuses(wf)["c"] == "pruned"

    assert workflow_retry(workflow_id=wf.pk, actor="operator") == {"retried": 1, "unpruned": 3}
    drain(wf.pk, queue, _fail(set()))

    final = statuses(wf)
    assert final.pop("lonely") == "cancelled"
    assert set(final.values()) == {"finished"}
    assert attempts(wf)["a2"] == ["failed", "finished"]
    assert attempts(wf)["a0"] == ["finished"]
    counters_are_exact(wf)


def test_restart_of_one_label_leaves_the_rest() -> None:
    queue = QueueFactory()
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain())
    drain(wf.pk, queue, _fail({"a0", "a1"}))

    assert workflow_restart(workflow_id=wf.pk, actor="operator", labels=["a"]) == {"restarted": 2}

    assert statuses(wf)["b0"] == "pruned"
    assert Job.objects.get(workflow=wf, name="a0").jobstatus == "defined"


# --- cancel, priority, memory ------------------------------------------------------------------


def test_cancel_reaches_jobs_in_flight_and_marks_the_workflow() -> None:
    queue = QueueFactory()
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain())
    a0 = Job.objects.get(workflow=wf, name="a0")
    from dispatcher.services import job_transition

    job_transition(pandaid=a0.pk, to="activated", cause="t", fields={"queue_id": queue.name})
    job_transition(pandaid=a0.pk, to="sent", cause="t")
    job_transition(pandaid=a0.pk, to="running", cause="t")

    assert workflow_cancel(workflow_id=wf.pk, actor="operator") == {"cancelled": 8}

    assert set(statuses(wf).values()) == {"cancelled"}
    wf.refresh_from_db()
    assert wf.status == "cancelled"
    assert wf.ended_at is not None
    assert set(Task.objects.filter(workflow=wf).values_list("status", flat=True)) == {"aborted"}
    counters_are_exact(wf)


def test_boost_priority_sets_or_raises_non_final_jobs_only() -> None:
    queue = QueueFactory()
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain(), priority=500)
    run_released(wf.pk, queue, lambda j: "finished" if j.name == "a0" else "failed")

    assert workflow_boost_priority(workflow_id=wf.pk, actor="operator", delta=100)["priority"] == 600
    assert workflow_boost_priority(workflow_id=wf.pk, actor="operator", priority=1000)["priority"] == 1000

    prios = dict(Job.objects.filter(workflow=wf).values_list("name", "currentpriority"))
    assert prios["a0"] == 500  # finished: untouched
    assert {prios[n] for n, s in statuses(wf).items() if s == "defined"} == {1000}
    assert set(Task.objects.filter(workflow=wf).values_list("priority", flat=True)) == {1000}


def test_set_memory_updates_waiting_jobs_and_rebrokers_activated_ones() -> None:
    queue = QueueFactory(name="Q_BIG", max_rss_mb=16000)
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain())
    a0 = Job.objects.get(workflow=wf, name="a0")
    from dispatcher.services import job_transition

    job_transition(pandaid=a0.pk, to="activated", cause="t", fields={"queue_id": queue.name})

    assert jobs_set_memory(workflow_id=wf.pk, actor="operator", memory_mb=12000, labels=["a"]) == {"jobs": 3}

    a0.refresh_from_db()
    assert (a0.jobstatus, a0.queue_id, a0.request_memory_mb) == ("defined", None, 12000)
    assert set(Job.objects.filter(workflow=wf, label="b").values_list("request_memory_mb", flat=True)) == {
        2000
    }
    assert Task.objects.get(workflow=wf, label="a").memory_mb == 12000
    with pytest.raises(WorkflowInvalid, match="max_rss_mb of Q_BIG"):
        jobs_set_memory(workflow_id=wf.pk, actor="operator", memory_mb=64000)
    counters_are_exact(wf)


def test_a_big_explicit_job_list_is_kept_as_rows_and_rebuilt_identically(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dispatcher.services import submit as service
    from dispatcher.workflows import spec_parse

    monkeypatch.setattr(service, "SPEC_INLINE_JOBS", 2)
    spec = {
        "name": "rows",
        "defaults": {"environment": {"A": "1"}},
        "jobs": [
            {"name": "a", "label": "x", "command": "a", "data_id": {"v": 1}, "files": [{"lfn": "in.fits"}]},
            {"name": "b", "label": "x", "command": "b\tc", "depends_on": ["a"], "container_image": "img"},
            {
                "name": "c",
                "label": "y",
                "command": "c",
                "depends_on": ["a", "b"],
                "resources": {"memory_mb": 3000},
            },
        ],
    }
    wf = workflow_submit_spec(owner=UserFactory(), spec=spec)

    assert "jobs" not in wf.spec
    assert wf.spec["jobs_from_rows"] == 3
    rebuilt = service.workflow_spec_explicit(wf)
    caps = {"max_jobs": 100, "max_edges": 100}
    original = spec_parse(spec, **caps).jobs
    again = spec_parse(rebuilt, **caps).jobs
    assert [
        (j.name, j.command, list(j.parents), j.memory_mb, dict(j.environment or {}), j.container_image)
        for j in again
    ] == [
        (j.name, j.command, list(j.parents), j.memory_mb, dict(j.environment or {}), j.container_image)
        for j in original
    ]
    assert again[0].files == [{"lfn": "in.fits", "role": "input"}]
    assert again[0].data_id == {"v": 1}


def test_selection_by_state_narrows_set_memory_and_restart() -> None:
    queue = QueueFactory(name="Q_SEL", max_rss_mb=16000)
    wf = workflow_submit(owner=UserFactory(), name="w", jobs=diamond_chain())
    drain(wf.pk, queue, _fail({"a1"}))
    assert statuses(wf)["b1"] == "pruned"

    assert jobs_set_memory(workflow_id=wf.pk, actor="operator", memory_mb=9000, jobstatus=["failed"]) == {
        "jobs": 1
    }
    memory = dict(Job.objects.filter(workflow=wf).values_list("name", "request_memory_mb"))
    assert memory["a1"] == 9000
    assert memory["b1"] == 2000
    assert workflow_restart(workflow_id=wf.pk, actor="operator", jobstatus=["pruned"]) == {"restarted": 3}
    assert statuses(wf)["a1"] == "failed"
    with pytest.raises(WorkflowInvalid, match="unknown job status 'broken'"):
        workflow_restart(workflow_id=wf.pk, actor="operator", jobstatus=["broken"])
