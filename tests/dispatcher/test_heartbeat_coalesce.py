"""Heartbeats of concurrent requests share one statement (dispatcher/services/pilot_calls/coalesce.py):
each caller is answered only with what its statement committed, fenced exactly as alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from django.db import OperationalError, connections, transaction

from dispatcher.models import Job, JobStatusLog
from dispatcher.queries import task_state_counts
from dispatcher.services.pilot_calls import DispatchRequest, PilotUpdate, job_pilot_update, jobs_dispatch
from dispatcher.services.pilot_calls.coalesce import COALESCER, HeartbeatCoalescer
from dispatcher.services.pilot_calls.heartbeat import _jobs_heartbeat_postgresql, jobs_heartbeat
from tests.dispatcher.protocol.conftest import activated_job
from tests.factories import QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]


def _sent(n: int, queue: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    queue = queue or QueueFactory()
    task = TaskFactory()
    for _ in range(n):
        activated_job(queue, task=task)
    return task, jobs_dispatch(request=DispatchRequest(queue=queue.name, n_jobs=n))


def _running(job: dict[str, Any], **kw: Any) -> PilotUpdate:
    fields = {
        "pandaid": job["pandaid"],
        "status": "running",
        "attemptnr": job["attemptnr"],
        "lease": job["lease"],
    }
    return PilotUpdate(**{**fields, **kw})


class _Held:
    """The real heartbeat statement as writer; the first statement waits until `behind` entries
    queued up behind it, so the next statement coalesces them. `fail` makes the statements after
    the first raise what a broken database connection raises, before writing anything."""

    def __init__(self, coalescer: HeartbeatCoalescer, behind: int, *, fail: bool = False) -> None:
        self.coalescer, self.behind, self.fail = coalescer, behind, fail
        self.statements: list[list[int]] = []
        self.entered = threading.Event()  # the first statement has taken its batch

    def __call__(self, updates: Sequence[PilotUpdate], queues: frozenset[str] | None) -> dict[int, str]:
        if not self.entered.is_set():
            self.entered.set()
            deadline = time.monotonic() + 10
            while self.coalescer.waiting() < self.behind and time.monotonic() < deadline:
                time.sleep(0.002)
        self.statements.append([u.pandaid for u in updates])
        if self.fail and len(self.statements) > 1:
            raise OperationalError("server closed the connection unexpectedly")
        return _jobs_heartbeat_postgresql(updates, queues)


def _concurrently(
    coalescer: HeartbeatCoalescer,
    writer: _Held,
    entries: list[tuple[list[PilotUpdate], frozenset[str] | None]],
) -> list[Any]:
    """Each entry written from its own thread (own connection), the first one first: the others
    start once its statement has taken its batch, and queue while that statement waits for them."""
    results: list[Any] = [None] * len(entries)

    def call(i: int) -> None:
        try:
            results[i] = coalescer.write(entries[i][0], entries[i][1], writer)
        except Exception as exc:  # asserted on by the test
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(entries))]
    threads[0].start()
    assert writer.entered.wait(10), "the first statement never started"
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    return results


def test_heartbeats_arriving_during_a_statement_share_the_next_one_and_count_exactly() -> None:
    task, jobs = _sent(7)
    coalescer = HeartbeatCoalescer()
    writer = _Held(coalescer, behind=6)

    results = _concurrently(coalescer, writer, [([_running(j)], None) for j in jobs])

    assert [sorted(s) for s in writer.statements] == [
        [jobs[0]["pandaid"]],
        sorted(j["pandaid"] for j in jobs[1:]),
    ]
    assert results == [{j["pandaid"]: "running"} for j in jobs]
    assert set(Job.objects.filter(task=task).values_list("jobstatus", flat=True)) == {"running"}
    assert JobStatusLog.objects.filter(job__task=task, jobstatus="running").count() == 7
    assert task_state_counts([task.pk])[task.pk] == {"running": 7}
    assert (coalescer.statements, coalescer.updates) == (2, 7)


def test_a_shared_statement_fences_each_update_as_if_it_were_alone() -> None:
    queue = QueueFactory()
    task, jobs = _sent(4, queue)
    other_task, [foreign] = _sent(1)
    coalescer = HeartbeatCoalescer()
    writer = _Held(coalescer, behind=4)
    bound = frozenset({queue.name})

    results = _concurrently(
        coalescer,
        writer,
        [
            ([_running(jobs[0])], bound),
            ([_running(jobs[1])], bound),
            ([_running(jobs[2], attemptnr=jobs[2]["attemptnr"] + 1)], bound),  # stale attempt
            ([_running(jobs[3], lease="not-the-lease")], bound),
            ([_running(foreign)], bound),  # another queue's job, same token
        ],
    )

    assert results == [{jobs[0]["pandaid"]: "running"}, {jobs[1]["pandaid"]: "running"}, {}, {}, {}]
    status = dict(Job.objects.filter(task__in=[task, other_task]).values_list("pandaid", "jobstatus"))
    assert [status[j["pandaid"]] for j in [*jobs, foreign]] == ["running", "running", "sent", "sent", "sent"]
    assert task_state_counts([task.pk])[task.pk] == {"running": 2, "sent": 2}


def test_different_token_queues_and_the_same_job_twice_never_share_a_statement() -> None:
    queue = QueueFactory()
    _, jobs = _sent(3, queue)
    coalescer = HeartbeatCoalescer()
    writer = _Held(coalescer, behind=3)
    bound = frozenset({queue.name})

    results = _concurrently(
        coalescer,
        writer,
        [
            ([_running(jobs[0])], bound),
            ([_running(jobs[1])], None),  # an admin token: any queue
            ([_running(jobs[2])], bound),
            ([_running(jobs[2], status="holding")], bound),
        ],
    )

    assert [len(s) for s in writer.statements] == [1, 1, 1, 1]
    assert results[:2] == [{jobs[0]["pandaid"]: "running"}, {jobs[1]["pandaid"]: "running"}]
    assert results[2] and results[3]  # both written, one after the other; a state never goes back
    assert Job.objects.get(pk=jobs[2]["pandaid"]).jobstatus == "holding"


def test_a_failed_statement_fails_every_caller_of_it_and_claims_nothing() -> None:
    task, jobs = _sent(4)
    coalescer = HeartbeatCoalescer()
    writer = _Held(coalescer, behind=3, fail=True)

    results = _concurrently(coalescer, writer, [([_running(j)], None) for j in jobs])

    assert results[0] == {jobs[0]["pandaid"]: "running"}
    assert all(isinstance(r, OperationalError) for r in results[1:]), results
    status = dict(Job.objects.filter(task=task).values_list("pandaid", "jobstatus"))
    assert [status[j["pandaid"]] for j in jobs] == ["running", "sent", "sent", "sent"]
    assert task_state_counts([task.pk])[task.pk] == {"running": 1, "sent": 3}


def test_a_heartbeat_inside_a_transaction_is_not_coalesced_and_rolls_back_with_it() -> None:
    task, [job] = _sent(1)
    before = COALESCER.statements

    with transaction.atomic():
        assert jobs_heartbeat([_running(job)], None)[0].status == "running"  # type: ignore[union-attr]
        transaction.set_rollback(True)

    assert COALESCER.statements == before
    assert Job.objects.get(pk=job["pandaid"]).jobstatus == "sent"
    assert task_state_counts([task.pk])[task.pk] == {"sent": 1}


def test_many_pilots_heartbeating_at_once_are_all_answered_with_what_was_written() -> None:
    queue = QueueFactory()
    task, jobs = _sent(64, queue)
    bound = frozenset({queue.name})
    errors: list[BaseException] = []
    replies: dict[int, list[str]] = {}

    def pilot(mine: list[dict[str, Any]]) -> None:
        try:
            for beat in range(3):  # sent -> running, then two plain heartbeats
                for job in mine:
                    reply = job_pilot_update(update=_running(job, node=f"wn{beat}"), queues=bound)
                    replies.setdefault(job["pandaid"], []).append(f"{reply.command}:{reply.status}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=pilot, args=(jobs[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors, errors
    assert all(r == ["None:running"] * 3 for r in replies.values()) and len(replies) == 64
    assert set(Job.objects.filter(task=task).values_list("node", "jobstatus")) == {("wn2", "running")}
    assert JobStatusLog.objects.filter(job__task=task, jobstatus="running").count() == 64
    assert task_state_counts([task.pk])[task.pk] == {"running": 64}


def _commit_waits_for_flush_after(updates: list[PilotUpdate]) -> str:
    """The heartbeat statement's transaction's `synchronous_commit` at its commit: the statement
    run inside an explicit transaction, where the setting it made for its own is still in force."""
    with transaction.atomic(), connections["default"].cursor() as cursor:
        _jobs_heartbeat_postgresql(updates, None)
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


def test_only_a_heartbeat_that_changes_no_state_commits_without_waiting_for_the_flush(
    settings: Any,
) -> None:
    _, jobs = _sent(2)
    # sent -> running: a state change waits for its WAL flush, even beside a plain heartbeat.
    assert _commit_waits_for_flush_after([_running(jobs[0])]) == "on"
    assert _commit_waits_for_flush_after([_running(jobs[0]), _running(jobs[1])]) == "on"
    # running -> running only: the commit does not wait (a crash may lose it, the pilot beats again).
    assert _commit_waits_for_flush_after([_running(jobs[0]), _running(jobs[1])]) == "off"
    assert Job.objects.get(pandaid=jobs[1]["pandaid"]).jobstatus == "running"
    # The setting was that transaction's only: the session's own is untouched after it.
    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    settings.AILURO_PILOT = {**settings.AILURO_PILOT, "LAZY_HEARTBEAT_FLUSH": False}
    assert _commit_waits_for_flush_after([_running(jobs[0])]) == "on"
