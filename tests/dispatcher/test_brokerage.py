"""Brokerage ranking: pure functions, no database."""

from __future__ import annotations

from dispatcher.brokerage import (
    JobNeeds,
    QueueInfo,
    ResourceTypeInfo,
    broker,
    fair_share_order,
    placements_by_queue,
    queue_refuses,
)


def _queue(name: str, **kw: object) -> QueueInfo:
    base: dict[str, object] = {
        "status": "online",
        "min_rss_mb": 0,
        "max_rss_mb": 4000,
        "max_cores": 8,
        "max_walltime_s": 86400,
        "max_disk_mb": 20000,
    }
    base.update(kw)
    return QueueInfo(name=name, **base)  # type: ignore[arg-type]


def _job(pandaid: int, **kw: object) -> JobNeeds:
    base: dict[str, object] = {"memory_mb": 2000, "cores": 1, "walltime_s": 3600, "disk_mb": 1000}
    base.update(kw)
    return JobNeeds(pandaid=pandaid, **base)  # type: ignore[arg-type]


def test_only_online_queues_take_production_jobs() -> None:
    for status in ("offline", "brokeroff", "test"):
        assert queue_refuses(_queue("Q", status=status), _job(1), "") is not None
    assert queue_refuses(_queue("Q"), _job(1), "") is None


def test_a_test_queue_takes_test_jobs() -> None:
    assert queue_refuses(_queue("Q", status="test"), _job(1, prodsourcelabel="test"), "") is None


def test_a_job_must_fit_memory_cores_walltime_and_disk() -> None:
    queue = _queue("Q", max_rss_mb=2000, max_cores=4, max_walltime_s=7200, max_disk_mb=5000, min_rss_mb=500)
    assert "2000 MB" in (queue_refuses(queue, _job(1, memory_mb=3000), "") or "")
    assert "at least 500" in (queue_refuses(queue, _job(1, memory_mb=100), "") or "")
    assert "4 cores" in (queue_refuses(queue, _job(1, cores=8), "") or "")
    assert "7200 s" in (queue_refuses(queue, _job(1, walltime_s=9000), "") or "")
    assert "5000 MB disk" in (queue_refuses(queue, _job(1, disk_mb=9000), "") or "")
    assert queue_refuses(queue, _job(1), "") is None


def test_a_queue_with_resource_types_takes_only_those() -> None:
    queue = _queue("Q", resource_types=frozenset({"MCORE"}))
    assert queue_refuses(queue, _job(1), "SCORE") is not None
    assert queue_refuses(queue, _job(1), "MCORE") is None


def test_a_job_without_resource_type_gets_the_one_its_shape_fits() -> None:
    types = [ResourceTypeInfo("MCORE", 2, None, 0, None), ResourceTypeInfo("SCORE", 1, 1, 0, None)]
    queue = _queue("Q", resource_types=frozenset({"MCORE"}))
    [single] = broker([_job(1, cores=1)], [queue], types)
    [multi] = broker([_job(2, cores=4)], [queue], types)
    assert single.queue is None and "resource type SCORE" in single.reason
    assert (multi.queue, multi.resource_type) == ("Q", "MCORE")


def test_jobs_spread_to_the_least_loaded_queue() -> None:
    busy = _queue("BUSY", activated=50, in_flight=10)
    idle = _queue("IDLE")
    placements = broker([_job(i) for i in range(1, 7)], [busy, idle])
    grouped = placements_by_queue(placements)
    assert len(grouped["IDLE"]) == 6 or len(grouped["IDLE"]) > len(grouped.get("BUSY", []))


def test_equal_queues_share_a_batch_evenly() -> None:
    placements = broker([_job(i) for i in range(1, 11)], [_queue("A"), _queue("B")])
    grouped = placements_by_queue(placements)
    assert (len(grouped["A"]), len(grouped["B"])) == (5, 5)


def test_a_job_no_queue_can_run_gets_every_reason() -> None:
    [placement] = broker([_job(1, memory_mb=99999)], [_queue("A"), _queue("B", status="offline")])
    assert placement.queue is None
    assert "A runs up to 4000 MB" in placement.reason and "B is offline" in placement.reason


def test_fair_share_serves_users_round_robin_in_priority_order() -> None:
    jobs = [_job(i, user="alice", priority=500) for i in range(1, 5)] + [_job(10, user="bob", priority=500)]
    order = [j.pandaid for j in fair_share_order(jobs)]
    assert order == [1, 10, 2, 3, 4]


def test_higher_priority_comes_first_within_a_user() -> None:
    jobs = [_job(1, user="a", priority=100), _job(2, user="a", priority=900)]
    assert [j.pandaid for j in fair_share_order(jobs)] == [2, 1]
