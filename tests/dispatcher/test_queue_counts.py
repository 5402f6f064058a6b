"""Per-queue counts of the jobs waiting and in flight (QueueCount + unfolded QueueCountDelta) equal
a count of the job rows after every kind of write: factory inserts, brokerage's bulk transition,
dispatch, the first `running` update, heartbeats, finished and failed final updates, the watcher,
single transitions, a queue changed in place, a delete; before and after the fold."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from dispatcher.loops import rollup_one_batch, watcher_one_batch
from dispatcher.models import Job, QueueCount, QueueCountDelta
from dispatcher.queries import queue_loads
from dispatcher.services import broker_one_batch, job_transition
from dispatcher.services.pilot_calls import (
    DispatchRequest,
    PilotUpdate,
    jobs_dispatch,
    jobs_pilot_update_bulk,
)
from dispatcher.services.transitions import queue_counts_fold, queue_counts_rebuild
from dispatcher.states import QUEUE_LOAD_KINDS
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_retry_rules", "postgres_only")]


def _scanned(queues: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {q: {} for q in queues}
    for queue, status, n in (
        Job.objects.filter(queue__in=queues, jobstatus__in=list(QUEUE_LOAD_KINDS))
        .values_list("queue_id", "jobstatus")
        .annotate(n=Count("pandaid"))
    ):
        kind = QUEUE_LOAD_KINDS[status]
        counts[queue][kind] = counts[queue].get(kind, 0) + n
    return counts


def _exact(queues: list[str]) -> dict[str, dict[str, int]]:
    counted = queue_loads(queues)
    assert counted == _scanned(queues)
    return counted


def test_every_write_path_keeps_the_queue_counts_exact() -> None:
    a, b = QueueFactory(name="QC_A"), QueueFactory(name="QC_B")
    queues = [a.name, b.name]
    task = TaskFactory()
    running = [JobFactory(task=task, jobstatus="running", queue=a, lease=f"l{i}") for i in range(3)]
    JobFactory(task=task, jobstatus="activated", queue=b)
    waiting = [JobFactory(task=task, request_memory_mb=100) for _ in range(4)]  # defined, no queue
    assert _exact(queues) == {a.name: {"in_flight": 3}, b.name: {"activated": 1}}

    assert broker_one_batch() == 4  # jobs_transition_bulk: its own deltas, summed per queue
    brokered = _exact(queues)
    assert sum(sum(c.values()) for c in brokered.values()) == 8

    sent = jobs_dispatch(request=DispatchRequest(queue=a.name, n_jobs=2))  # the dispatch statement
    _exact(queues)
    before_running = QueueCountDelta.objects.count()
    jobs_pilot_update_bulk(  # the first `running` update, then a plain heartbeat
        updates=[
            PilotUpdate(pandaid=j["pandaid"], status="running", attemptnr=1, lease=j["lease"]) for j in sent
        ],
        queues=None,
    )
    assert QueueCountDelta.objects.count() == before_running  # sent → running: in flight either way
    jobs_pilot_update_bulk(
        updates=[
            PilotUpdate(pandaid=j["pandaid"], status="running", attemptnr=1, lease=j["lease"]) for j in sent
        ],
        queues=None,
    )
    assert QueueCountDelta.objects.count() == before_running  # nor does a heartbeat
    jobs_pilot_update_bulk(
        updates=[
            PilotUpdate(pandaid=running[0].pandaid, status="finished", attemptnr=1, lease="l0"),
            PilotUpdate(
                pandaid=running[1].pandaid,
                status="failed",
                attemptnr=1,
                lease="l1",
                errors={"piloterrorcode": 1305},
            ),
        ],
        queues=None,
    )
    _exact(queues)

    Job.objects.filter(pk=running[2].pk).update(heartbeat_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert watcher_one_batch(now=dt.datetime(2026, 12, 31, tzinfo=dt.UTC)) >= 1  # set-based
    _exact(queues)

    moved = Job.objects.filter(queue=b, jobstatus="activated").values_list("pk", flat=True).first()
    assert moved is not None
    Job.objects.filter(pk=moved).update(queue=a)  # a repair moving a job between queues
    job_transition(pandaid=waiting[0].pk, to="cancelled", cause="test")  # single transition
    Job.objects.filter(queue=a, jobstatus="activated").order_by("pk")[:1].get().delete()
    folded_before = _exact(queues)

    assert queue_counts_fold() > 0
    assert not QueueCountDelta.objects.exists()
    assert _exact(queues) == folded_before
    assert QueueCount.objects.filter(count__lt=0).count() == 0


def test_the_rollup_loop_folds_the_queue_deltas_and_a_rebuild_recounts() -> None:
    queue = QueueFactory()
    JobFactory.create_batch(3, jobstatus="running", queue=queue)
    assert QueueCountDelta.objects.exists()

    rollup_one_batch()

    assert not QueueCountDelta.objects.exists()
    assert dict(QueueCount.objects.filter(queue=queue.name).values_list("kind", "count")) == {"in_flight": 3}
    # A seeder loading jobs with the triggers off, or a hand edit of the counts: the rebuild recounts.
    QueueCount.objects.filter(queue=queue.name).update(count=99)
    assert queue_counts_rebuild() >= 3
    assert _exact([queue.name]) == {queue.name: {"in_flight": 3}}


def test_brokerage_weighs_queues_by_the_counters_without_counting_jobs() -> None:
    busy, idle = QueueFactory(name="QC_BUSY", max_rss_mb=8000), QueueFactory(name="QC_IDLE", max_rss_mb=8000)
    JobFactory.create_batch(5, jobstatus="activated", queue=busy)  # a backlog: load 5 against 0
    waiting = JobFactory(request_memory_mb=100)

    with CaptureQueriesContext(connection) as queries:
        assert broker_one_batch() == 1

    waiting.refresh_from_db()
    assert waiting.queue_id == idle.name  # on a tie the first by name, the busy one, would win
    sqls = [q["sql"] for q in queries]
    assert any("dispatcher_queuecount" in sql for sql in sqls)
    assert not [sql for sql in sqls if "COUNT(" in sql.upper() and '"dispatcher_job"' in sql]
