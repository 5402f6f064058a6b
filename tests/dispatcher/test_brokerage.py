"""Brokerage ranking: pure functions, no database."""

from __future__ import annotations

from dispatcher.brokerage import (
    JobNeeds,
    QueueInfo,
    ResourceTypeInfo,
    SiteRule,
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


# --- site constraints (PanDA's includedSite / excludedSite) -------------------------------------


def test_include_matches_queue_or_site_names_with_wildcards() -> None:
    rule = SiteRule(include=("SLAC_*", "IN2P3"))

    assert rule.refusal("SLAC_Rubin", "SLAC") is None
    assert rule.refusal("CC_Rubin", "IN2P3") is None
    assert rule.refusal("BNL_Rubin", "BNL") == "BNL_Rubin is not among the task's sites (SLAC_*, IN2P3)"


def test_exclude_wins_over_include_and_no_rule_allows_everything() -> None:
    rule = SiteRule(include=("SLAC*",), exclude=("SLAC_TEST",))

    assert rule.refusal("SLAC_TEST", "SLAC") == "SLAC_TEST is excluded by the task's sites (SLAC_TEST)"
    assert rule.refusal("SLAC_Rubin", "SLAC") is None
    assert not SiteRule()
    assert SiteRule().refusal("anything", "anywhere") is None


def test_brokerage_keeps_jobs_within_their_sites_even_on_a_busier_queue() -> None:
    idle = _queue("BNL_Rubin", site="BNL")
    busy = _queue("SLAC_Rubin", site="SLAC", activated=500, in_flight=10)
    only_slac = SiteRule(include=("SLAC",))

    placements = broker([_job(1, sites=only_slac), _job(2)], [idle, busy])

    assert {p.pandaid: p.queue for p in placements} == {1: "SLAC_Rubin", 2: "BNL_Rubin"}
    assert (
        queue_refuses(idle, _job(3, sites=only_slac), "") == "BNL_Rubin is not among the task's sites (SLAC)"
    )
