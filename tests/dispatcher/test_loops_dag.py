"""DAG release, pruning and un-pruning driven by the loops (set-based, no DAG scan)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from dispatcher.models import Job
from dispatcher.queries import workflow_state_counts
from dispatcher.services import (
    NewJob,
    broker_one_batch,
    job_attempt_end,
    job_transition,
    workflow_restart,
    workflow_submit,
)
from tests.factories import QueueFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_retry_rules")]


def _run(job: Job, **errors: object) -> None:
    job.refresh_from_db()
    job_transition(pandaid=job.pk, to="sent", cause="pilot", fields={"dispatched_at": timezone.now()})
    job_transition(pandaid=job.pk, to="running", cause="pilot", fields={"starttime": timezone.now()})
    job_attempt_end(
        pandaid=job.pk,
        attemptnr=job.attemptnr,
        status="failed" if errors else "finished",
        cause="pilot",
        errors=errors,
    )


def _diamond() -> tuple[int, dict[str, Job]]:
    """a → b, a → c, (b, c) → d."""
    jobs = [
        NewJob(name="a", label="a", command="true"),
        NewJob(name="b", label="b", command="true", parents=["a"]),
        NewJob(name="c", label="c", command="true", parents=["a"]),
        NewJob(name="d", label="d", command="true", parents=["b", "c"]),
    ]
    wf = workflow_submit(owner=UserFactory(), name="diamond", jobs=jobs)
    return wf.pk, {j.name: j for j in Job.objects.filter(workflow=wf)}


def test_a_child_is_released_only_when_all_its_parents_finished() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, jobs = _diamond()
    assert broker_one_batch() == 1
    _run(jobs["a"])
    assert broker_one_batch() == 2
    _run(jobs["b"])
    assert broker_one_batch() == 0  # d still waits for c
    assert Job.objects.get(pk=jobs["d"].pk).pending_parents == 1
    _run(jobs["c"])
    assert broker_one_batch() == 1
    _run(jobs["d"])
    assert workflow_state_counts(wf) == {"finished": 4}


def test_a_restart_unprunes_the_descendants_and_they_wait_for_the_rerun_parent() -> None:
    QueueFactory(max_rss_mb=8000)
    wf, jobs = _diamond()
    broker_one_batch()
    _run(jobs["a"])
    broker_one_batch()
    _run(jobs["b"])
    _run(jobs["c"], transexitcode=2)
    assert workflow_state_counts(wf) == {"finished": 2, "failed": 1, "pruned": 1}

    assert workflow_restart(workflow_id=wf, actor="operator") == {"restarted": 2}
    assert dict(
        Job.objects.filter(workflow_id=wf, name__in=["c", "d"]).values_list("name", "pending_parents")
    ) == {
        "c": 0,
        "d": 1,
    }
    assert Job.objects.get(pk=jobs["c"].pk).attemptnr == 2

    assert broker_one_batch() == 1  # c only; d waits for it
    _run(jobs["c"])
    assert broker_one_batch() == 1
    _run(jobs["d"])
    assert workflow_state_counts(wf) == {"finished": 4}
