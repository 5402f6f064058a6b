from __future__ import annotations

import contextlib
import itertools
import random
import threading

import pytest
from django.db import connection, connections
from django.db.models import Q

from dispatcher.models import Job, JobStatusLog, Task
from dispatcher.queries import task_state_counts
from dispatcher.services import job_transition, jobs_transition_bulk, task_counts_fold, task_counts_recompute
from dispatcher.states import (
    JOB_RESTARTABLE,
    JOB_TRANSITIONS,
    JobStatus,
    TransitionRefused,
    sources_of,
    transition_allowed,
)
from tests.factories import JobFactory, QueueFactory, TaskFactory

ALL_PAIRS = list(itertools.product(JobStatus.values, repeat=2))
ALLOWED = [(a, b) for a, b in ALL_PAIRS if transition_allowed(a, b)]
REFUSED = [(a, b) for a, b in ALL_PAIRS if not transition_allowed(a, b)]


def _job_in(status: str, **kwargs: object) -> Job:
    extra: dict[str, object] = {"jobstatus": status}
    if status == JobStatus.ACTIVATED:
        extra["queue"] = QueueFactory()
    extra.update(kwargs)
    return JobFactory(**extra)


def test_the_table_matches_the_design() -> None:
    # A finished job goes back to defined only as a final job re-armed by a restart or retry
    # (services.workflow_actions._final_jobs_rearm); restart itself never takes finished jobs.
    assert JOB_TRANSITIONS[JobStatus.FINISHED] == frozenset({JobStatus.DEFINED})
    assert JOB_TRANSITIONS[JobStatus.CLOSED] == frozenset()
    assert sources_of(JobStatus.SENT) == {JobStatus.ACTIVATED}
    assert JobStatus.DEFINED in JOB_TRANSITIONS[JobStatus.FAILED]  # restart
    assert JobStatus.FINISHED not in JOB_RESTARTABLE  # finished never re-runs by restart
    assert len(ALLOWED) + len(REFUSED) == 121


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_every_allowed_transition_moves_the_job_logs_it_and_counts_it(current: str, target: str) -> None:
    job = _job_in(current)
    fields = {"queue_id": QueueFactory().name} if target == JobStatus.ACTIVATED else {}

    result = job_transition(pandaid=job.pandaid, to=target, cause="test", fields=fields)

    assert result is not None
    assert (result.previous, result.status) == (current, target)
    job.refresh_from_db()
    assert job.jobstatus == target
    assert job.statechangetime is not None
    entry = JobStatusLog.objects.get(job=job)
    assert (entry.previous, entry.jobstatus, entry.cause) == (current, target, "test")
    counts = task_state_counts([job.task_id])[job.task_id]
    assert counts == {target: 1}


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_every_refused_transition_raises_and_changes_nothing(current: str, target: str) -> None:
    job = _job_in(current)

    with pytest.raises(TransitionRefused, match=f"no transition {current} -> {target}"):
        job_transition(pandaid=job.pandaid, to=target, cause="test")

    job.refresh_from_db()
    assert job.jobstatus == current
    assert not JobStatusLog.objects.filter(job=job).exists()
    assert task_state_counts([job.task_id])[job.task_id] == {current: 1}


@pytest.mark.django_db
def test_a_stale_attempt_or_unexpected_state_loses_without_error() -> None:
    job = _job_in(JobStatus.RUNNING, attemptnr=2)

    assert (
        job_transition(pandaid=job.pandaid, to=JobStatus.FINISHED, cause="stale pilot", attemptnr=1) is None
    )
    assert (
        job_transition(pandaid=job.pandaid, to=JobStatus.FINISHED, cause="wrong guess", expect=JobStatus.SENT)
        is None
    )

    job.refresh_from_db()
    assert job.jobstatus == JobStatus.RUNNING


@pytest.mark.django_db
def test_unknown_pandaid_and_unknown_field_are_errors() -> None:
    with pytest.raises(Job.DoesNotExist):
        job_transition(pandaid=987654321, to=JobStatus.CANCELLED, cause="x")
    job = _job_in(JobStatus.RUNNING)
    with pytest.raises(ValueError, match="cannot set jobstatus"):
        job_transition(pandaid=job.pandaid, to=JobStatus.FINISHED, cause="x", fields={"jobstatus": "failed"})


@pytest.mark.django_db
def test_a_retry_bumps_the_attempt_on_the_same_pandaid() -> None:
    job = _job_in(JobStatus.RUNNING)

    result = job_transition(pandaid=job.pandaid, to=JobStatus.DEFINED, cause="retry", fields={"attemptnr": 2})

    assert result is not None
    assert result.attemptnr == 2
    job.refresh_from_db()
    assert (job.pandaid, job.attemptnr, job.jobstatus) == (result.pandaid, 2, JobStatus.DEFINED)
    assert JobStatusLog.objects.get(job=job).attemptnr == 2


@pytest.mark.django_db
def test_bulk_transition_moves_only_jobs_in_the_source_state() -> None:
    task = TaskFactory()
    defined = [JobFactory(task=task) for _ in range(5)]
    running = JobFactory(task=task, jobstatus=JobStatus.RUNNING)
    queue = QueueFactory()

    moved = jobs_transition_bulk(
        source=JobStatus.DEFINED,
        to=JobStatus.ACTIVATED,
        cause="brokered",
        pandaids=[j.pandaid for j in defined] + [running.pandaid],
        fields={"queue_id": queue.name},
    )

    assert sorted(moved) == sorted(j.pandaid for j in defined)
    assert set(Job.objects.filter(pk__in=moved).values_list("jobstatus", "queue_id")) == {
        (JobStatus.ACTIVATED, queue.name)
    }
    assert task_state_counts([task.pk])[task.pk] == {JobStatus.ACTIVATED: 5, JobStatus.RUNNING: 1}
    assert JobStatusLog.objects.filter(job_id__in=moved, jobstatus=JobStatus.ACTIVATED).count() == 5


@pytest.mark.django_db
def test_bulk_transition_with_an_empty_selection_or_a_limit() -> None:
    task = TaskFactory()
    jobs = [JobFactory(task=task) for _ in range(4)]
    assert (
        jobs_transition_bulk(source=JobStatus.DEFINED, to=JobStatus.CANCELLED, cause="x", pandaids=[]) == []
    )
    assert (
        jobs_transition_bulk(
            source=JobStatus.DEFINED, to=JobStatus.CANCELLED, cause="x", where=Q(pandaid__in=[])
        )
        == []
    )
    moved = jobs_transition_bulk(
        source=JobStatus.DEFINED,
        to=JobStatus.CANCELLED,
        cause="cancelled by test",
        where=Q(task=task),
        limit=3,
        fields={"attemptnr": 2},
    )
    assert moved == [j.pandaid for j in jobs[:3]]  # in pandaid order, the limit applied
    assert (
        list(
            JobStatusLog.objects.filter(job_id__in=moved).values_list(
                "attemptnr", "jobstatus", "previous", "cause"
            )
        )
        == [(2, JobStatus.CANCELLED, JobStatus.DEFINED, "cancelled by test")] * 3
    )
    assert task_state_counts([task.pk])[task.pk] == {JobStatus.CANCELLED: 3, JobStatus.DEFINED: 1}


@pytest.mark.django_db
def test_bulk_transition_refuses_an_edge_outside_the_table() -> None:
    with pytest.raises(TransitionRefused):
        jobs_transition_bulk(source=JobStatus.CLOSED, to=JobStatus.DEFINED, cause="x", pandaids=[1])


@pytest.mark.django_db
def test_folding_keeps_counts_exact_and_empties_the_delta_table() -> None:
    task = TaskFactory()
    jobs = [JobFactory(task=task) for _ in range(4)]
    job_transition(pandaid=jobs[0].pandaid, to=JobStatus.CANCELLED, cause="x")
    before = task_state_counts([task.pk])[task.pk]

    folded = task_counts_fold()

    assert folded >= 6  # 4 creations + the two sides of the cancel
    assert task_state_counts([task.pk])[task.pk] == before == {JobStatus.DEFINED: 3, JobStatus.CANCELLED: 1}
    assert task_counts_fold() == 0
    assert task_counts_recompute(task_id=task.pk) == before


def _race(pandaid: int, targets: list[str]) -> list[object]:
    """Each thread, on its own connection, tries one transition of the same job at once."""
    barrier = threading.Barrier(len(targets))
    results: list[object] = [None] * len(targets)

    def attempt(i: int, target: str) -> None:
        try:
            barrier.wait()
            results[i] = job_transition(
                pandaid=pandaid, to=target, cause=f"racer {i}", expect=JobStatus.RUNNING
            )
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres_only")
def test_compare_and_set_race_has_exactly_one_winner() -> None:
    for _ in range(20):
        job = _job_in(JobStatus.RUNNING)

        results = _race(job.pandaid, [JobStatus.FINISHED, JobStatus.FAILED])

        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert not any(isinstance(r, Exception) for r in results), results
        job.refresh_from_db()
        assert job.jobstatus == winners[0].status  # type: ignore[attr-defined]
        assert JobStatusLog.objects.filter(job=job).count() == 1
        assert task_state_counts([job.task_id])[job.task_id] == {job.jobstatus: 1}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres_only")
def test_counters_are_exact_after_1000_random_transitions_from_8_threads() -> None:
    queue = QueueFactory()
    tasks = [TaskFactory() for _ in range(3)]
    jobs = [JobFactory(task=tasks[i % 3]) for i in range(60)]
    pandaids = [j.pandaid for j in jobs]
    per_thread = 125
    errors: list[BaseException] = []
    done = [0] * 8

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while done[seed] < per_thread:
                pandaid = rng.choice(pandaids)
                current = Job.objects.filter(pk=pandaid).values_list("jobstatus", flat=True).get()
                # Absorbing states (finished, closed) would end the walk early; other tests cover them.
                targets = sorted(JOB_TRANSITIONS[JobStatus(current)] - {JobStatus.FINISHED, JobStatus.CLOSED})
                target = rng.choice(targets)
                fields = {"queue_id": queue.name} if target == JobStatus.ACTIVATED else {}
                if target == JobStatus.DEFINED:
                    fields["attemptnr"] = 1
                # TransitionRefused: the job moved under us between the read and the call; the CAS saw it.
                with contextlib.suppress(TransitionRefused):
                    job_transition(
                        pandaid=pandaid, to=target, cause=f"t{seed}", expect=current, fields=fields
                    )
                done[seed] += 1
                if rng.random() < 0.05:
                    task_counts_fold(batch=200)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors, errors
    assert sum(done) == 1000
    transitions = JobStatusLog.objects.count()
    assert transitions > 500  # most attempts won; the rest lost a race, which is the point
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        exact = {
            status: n
            for status, n in (
                (s, Job.objects.filter(task=task, jobstatus=s).count()) for s in JobStatus.values
            )
            if n
        }
        assert task_state_counts([task.pk])[task.pk] == exact
    task_counts_fold()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM dispatcher_taskcountdelta")
        assert cursor.fetchone()[0] == 0
    for task in tasks:
        assert sum(task_state_counts([task.pk])[task.pk].values()) == 20
