"""core.loops.loop_run: a step under a lease, repeated within a budget, every run recorded."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from core.leases import lease_acquire
from core.loops import loop_run
from core.models import Lease, LoopStatus

pytestmark = pytest.mark.django_db


class Countdown:
    """A step with `work` units to do, `per_step` at a time; remembers how often it was called."""

    def __init__(self, work: int, per_step: int = 1) -> None:
        self.left, self.per_step, self.calls = work, per_step, 0

    def __call__(self) -> int:
        self.calls += 1
        done = min(self.left, self.per_step)
        self.left -= done
        return done


def _run(step: Countdown, *, budget_s: float = 20.0) -> int | None:
    return loop_run(name="count", lease="loop:count", step=step, ttl_s=60, budget_s=budget_s)


def test_a_loop_whose_lease_is_held_elsewhere_does_nothing_and_records_nothing() -> None:
    assert lease_acquire(name="loop:count", holder="other-worker", ttl_s=60)
    step = Countdown(3)

    assert _run(step) is None
    assert step.calls == 0
    assert not LoopStatus.objects.exists()


def test_an_expired_lease_is_taken_over_and_released_after_the_run() -> None:
    past = timezone.now() - dt.timedelta(minutes=10)
    Lease.objects.create(name="loop:count", holder="dead-worker", acquired_at=past, expires_at=past)

    assert _run(Countdown(1)) == 1
    assert not Lease.objects.filter(name="loop:count").exists()


def test_a_run_repeats_its_step_until_it_finds_no_work() -> None:
    step = Countdown(5, per_step=2)

    assert _run(step) == 5
    assert step.calls == 4  # 2, 2, 1, then 0


class Batched:
    """A step with a `limit`, as the loops' steps have: `arrivals` new units before each call."""

    def __init__(self, backlog: int, arrivals: int) -> None:
        self.left, self.arrivals, self.calls = backlog, arrivals, 0

    def __call__(self, *, limit: int = 4) -> int:
        self.calls += 1
        done = min(self.left, limit)
        self.left += self.arrivals - done
        return done


def test_a_run_works_off_a_backlog_in_full_batches_then_stops_at_a_partial_one() -> None:
    step = Batched(backlog=10, arrivals=1)

    assert _run(step) == 4 + 4 + 4 + 1  # 10 → 7 → 4 → 1 (+1 arriving each call): 2 is < 4
    assert step.calls == 4


def test_a_trickle_of_work_is_taken_once_a_run_not_for_the_whole_budget() -> None:
    step = Batched(backlog=1, arrivals=1)  # always something new, never a full batch

    assert _run(step) == 1
    assert step.calls == 1


def test_a_given_limit_is_the_batch() -> None:
    step = Batched(backlog=5, arrivals=0)

    assert loop_run(name="count", lease="loop:count", step=step, ttl_s=60, budget_s=20, limit=2) == 5
    assert step.calls == 3  # 2, 2, 1


def test_a_run_with_no_budget_calls_its_step_once() -> None:
    step = Countdown(5, per_step=2)

    assert _run(step, budget_s=0) == 2
    assert step.calls == 1


def test_each_run_is_recorded_with_its_work_steps_and_time() -> None:
    before = timezone.now()
    _run(Countdown(5, per_step=2))
    _run(Countdown(1))

    status = LoopStatus.objects.get()
    assert (status.name, status.done, status.steps, status.error) == ("count", 1, 2, "")
    assert before <= status.started_at <= status.finished_at == status.succeeded_at
    assert status.duration_s >= 0 and status.holder


def test_a_failing_run_is_recorded_keeps_its_last_success_and_frees_the_lease() -> None:
    _run(Countdown(1))
    succeeded = LoopStatus.objects.get().succeeded_at

    def broken() -> int:
        raise RuntimeError("database is restarting")

    with pytest.raises(RuntimeError, match="restarting"):
        loop_run(name="count", lease="loop:count", step=broken, ttl_s=60, budget_s=20)

    status = LoopStatus.objects.get()
    assert status.error == "RuntimeError: database is restarting"
    assert (status.done, status.steps, status.succeeded_at) == (0, 0, succeeded)
    assert status.finished_at > succeeded
    assert not Lease.objects.exists()
