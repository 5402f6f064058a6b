"""Honest progress of a group's attempt (docs/decisions/0009-honest-stall-and-eta.md): when it is stalled and when it will
end, each with the basis it was judged on, for the advancer to store and the pages, the API and
the CLI to show.

* Stalled: no progress signal — a job of the attempt changed state, or a job at a pilot
  heartbeated with CPU progress — for longer than the expected runtime of the labels running
  (a high percentile of their finished attempts' wall times, else their requested walltime),
  and never sooner than the campaign's `stall_after_s`. With no job running the floor alone
  applies. A job running for hours while its pilot heartbeats is not stalled; one whose pilot went
  silent is, once its label's expected runtime has passed.
* ETA: the work left (queued jobs × their label's median runtime, plus what the running jobs
  still have to go of theirs) over the jobs running now (at least one). While jobs run at a steady
  rate the work left falls as fast as the clock moves, so the ETA stands still; a new estimate
  within ETA_TOLERANCE of the stored one keeps the stored one, so it does not jitter either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from campaigns.queries import AttemptActivity, LabelRuntime

ETA_TOLERANCE = 0.1  # of the time left: a smaller change keeps the stored ETA
ETA_TOLERANCE_MIN_S = 60.0
BASIS_MAX = 300


def human_s(seconds: float) -> str:
    """340 s, 40 min, 2.5 h."""
    if seconds < 120:
        return f"{round(seconds)} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def label_runtime(
    label: str, history: Mapping[str, LabelRuntime], request_s: float
) -> tuple[float, float, str]:
    """(median, expected, basis) of one label's runtime: its history, else its requested walltime."""
    h = history.get(label)
    if h is not None:
        return h.median_s, h.expected_s, f"{h.n} finished, median {human_s(h.median_s)}"
    return request_s, request_s, f"no history, requested {human_s(request_s)}"


@dataclass(frozen=True)
class Stall:
    activity_at: dt.datetime
    cpu_seen_s: float
    stalled: bool
    basis: str


def stall_judge(
    *,
    now: dt.datetime,
    last_activity: dt.datetime,
    cpu_seen_s: float,
    activity: AttemptActivity,
    history: Mapping[str, LabelRuntime],
    requests_s: Mapping[str, float],
    floor_s: float,
) -> Stall:
    """The newest progress signal and whether the attempt has gone without one for too long.
    A heartbeat counts when the CPU time its jobs reported moved since the last round (pilots that
    report no CPU time at all: every heartbeat counts)."""
    signals = [last_activity]
    if activity.changed_at is not None:
        signals.append(activity.changed_at)
    cpu_moved = not activity.cpu_reported or abs(activity.cpu_s - cpu_seen_s) > 1e-6
    if activity.heartbeat_at is not None and cpu_moved:
        signals.append(activity.heartbeat_at)
    last = min(max(signals), now)
    limit, why = floor_s, f"stall_after_s {human_s(floor_s)}"
    for label in sorted({label for label, _ in activity.running}):
        _median, expected, _basis = label_runtime(label, history, requests_s.get(label, floor_s))
        if expected > limit:
            source = f"p95 of {history[label].n} finished" if label in history else "requested walltime"
            limit, why = expected, f"{label} expected ≤ {human_s(expected)} ({source})"
    if not activity.running:
        why += ", no job running"
    quiet = (now - last).total_seconds()
    stalled = quiet > limit
    if stalled:
        basis = f"no state change or CPU progress for {human_s(quiet)}; {why}"
    else:
        basis = f"last progress {human_s(quiet)} ago; stalled after {human_s(limit)}: {why}"
    return Stall(activity_at=last, cpu_seen_s=activity.cpu_s, stalled=stalled, basis=basis[:BASIS_MAX])


def eta_estimate(
    *,
    now: dt.datetime,
    previous: dt.datetime | None,
    in_flight: Mapping[str, int],
    activity: AttemptActivity,
    history: Mapping[str, LabelRuntime],
    requests_s: Mapping[str, float],
) -> tuple[dt.datetime, str]:
    """(ETA, basis) of an attempt with `in_flight` jobs per label not yet final."""
    running: dict[str, int] = {}
    work_s = 0.0
    for label, start in activity.running:
        running[label] = running.get(label, 0) + 1
        median, _expected, _basis = label_runtime(label, history, requests_s.get(label, 0.0))
        elapsed = (now - start).total_seconds() if start is not None else 0.0
        work_s += max(median - elapsed, 0.0)
    parts = []
    for label in sorted(set(in_flight) | set(running)):
        median, _expected, basis = label_runtime(label, history, requests_s.get(label, 0.0))
        work_s += max(in_flight.get(label, 0) - running.get(label, 0), 0) * median
        parts.append(f"{label}: {basis}")
    n_running = len(activity.running)
    eta = now + dt.timedelta(seconds=work_s / max(n_running, 1))
    if previous is not None and previous > now:
        left_s = (previous - now).total_seconds()
        if abs((eta - previous).total_seconds()) <= max(ETA_TOLERANCE * left_s, ETA_TOLERANCE_MIN_S):
            eta = previous
    concurrency = f"{n_running} running" if n_running else "none running: one at a time"
    return eta, f"ETA from {'; '.join(parts)}; {concurrency}"[:BASIS_MAX]
