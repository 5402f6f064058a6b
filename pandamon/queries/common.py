"""What the monitor's named reads share: progress of a set of state counts and the chart's bucket
width."""

from __future__ import annotations

from datetime import datetime, timedelta

from dispatcher.states import JobStatus


def progress(counts: dict[str, int]) -> dict[str, float | int]:
    total = sum(counts.values())
    finished = counts.get(JobStatus.FINISHED, 0)
    failed = counts.get(JobStatus.FAILED, 0)
    pruned = counts.get(JobStatus.PRUNED, 0)
    return {
        "total": total,
        "finished_pct": 100 * finished / total if total else 0.0,
        "failed_pct": 100 * failed / total if total else 0.0,
        "pruned_pct": 100 * pruned / total if total else 0.0,
    }


def bucket_unit(since: datetime | None, until: datetime | None, now: datetime) -> str:
    """The chart's bucket: hours for windows up to three days, days beyond (all time: 30 days)."""
    span = (until or now) - (since or now - timedelta(days=30))
    return "hour" if span <= timedelta(days=3) else "day"
