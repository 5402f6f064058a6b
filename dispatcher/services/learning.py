"""Learned requests (docs/user-guide/workflows.md#learned-requests): a label that opts in
(`learn_requests`) gets the memory and walltime requests of its jobs not yet dispatched moved to
what its finished attempts measured — a high percentile × a margin, rounded up — once enough of
them were measured. Learned values may be lower than the blind request: that is the point (a
smaller request fits more queues and packs more jobs per node).

`requests_learn` is the `requests` loop's step (config/loops.py). Once per task: the first run that
finds `min_samples` measured attempts records what it learned on the task (`Task.learned`) and
writes it to the jobs, with the reason on each job (`Job.request_reason`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dispatcher.brokerage import ANYWHERE
from dispatcher.models import Job, JobAttempt, Task
from dispatcher.queries import task_site_rules
from dispatcher.services.submit import queue_limits
from dispatcher.services.transitions import jobs_transition_bulk
from dispatcher.states import TASK_FINAL, JobStatus
from dispatcher.workflows import QueueLimits

log = logging.getLogger(__name__)

MAX_SAMPLES = 1000  # the newest measured attempts a task learns from
MIN_WALLTIME_S = 60
WALLTIME_ROUND_S = 60


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile of `values` (non-empty): a measured value, never an
    interpolation between two."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def learned_requests(
    *,
    rss_kb: Sequence[float],
    walltimes_s: Sequence[float],
    policy: Mapping[str, Any],
    memory_mb: int,
    walltime_s: int,
    memory_cap_mb: int,
    walltime_cap_s: int,
    round_mb: int,
) -> dict[str, Any]:
    """What the measurements teach (pure): the new memory and walltime requests and the reason.

    memory = p-th percentile of the peak RSS (MB) × margin, rounded up to `round_mb`, at least
    `round_mb`, at most `memory_cap_mb`; walltime likewise from the walltimes, rounded up to a
    minute, at least a minute, at most `walltime_cap_s`."""
    p, margin = float(policy["percentile"]), float(policy["margin"])
    p_mb = percentile([kb / 1024 for kb in rss_kb], p)
    p_s = percentile(walltimes_s, p)
    memory = max(round_mb, round_up(p_mb * margin, round_mb))
    walltime = max(MIN_WALLTIME_S, round_up(p_s * margin, WALLTIME_ROUND_S))
    memory_note = f"p{p:g} {p_mb:.0f} MB × {margin:g}, rounded up to {round_mb} MB"
    walltime_note = f"p{p:g} {p_s:.0f} s × {margin:g}, rounded up to a minute"
    if memory > memory_cap_mb:
        memory, memory_note = memory_cap_mb, f"{memory_note}, capped at {memory_cap_mb} MB"
    if walltime > walltime_cap_s:
        walltime, walltime_note = walltime_cap_s, f"{walltime_note}, capped at {walltime_cap_s} s"
    n = len(rss_kb)
    reason = (
        f"memory {memory_mb}→{memory} MB and walltime {walltime_s}→{walltime} s learned from {n} finished "
        f"attempts: {memory_note}; {walltime_note}"
    )
    return {
        "memory_mb": {"from": memory_mb, "to": memory, "measured_mb": round(p_mb, 1)},
        "walltime_s": {"from": walltime_s, "to": walltime, "measured_s": round(p_s, 1)},
        "samples": n,
        "percentile": p,
        "margin": margin,
        "reason": reason,
    }


def _caps(task: Task, queues: Sequence[QueueLimits]) -> tuple[int, int]:
    """The largest memory and walltime a queue the task may run on offers (its site rule, its
    cores), the memory also under the task's own cap."""
    rule = next((r for _, _, r in task_site_rules(Task.objects.filter(pk=task.pk))), ANYWHERE)
    fitting = [q for q in queues if q.max_cores >= task.cores and rule.refusal(q.name, q.site) is None]
    memory = max((q.max_rss_mb for q in fitting), default=task.max_memory_mb)
    walltime = max((q.max_walltime_s for q in fitting), default=task.walltime_s)
    return min(memory, task.max_memory_mb), walltime


def requests_learn(*, limit: int = 200, now: dt.datetime | None = None) -> int:
    """For up to `limit` running tasks that opted in and learned nothing yet: when at least
    `min_samples` of their attempts finished with a measured peak RSS and walltime, learn the
    requests (`learned_requests`) and apply them (`task_requests_apply`). Returns jobs changed."""
    now = now or timezone.now()
    tasks = list(
        Task.objects.filter(learn_requests__isnull=False, learned__isnull=True)
        .exclude(status__in=list(TASK_FINAL))
        .order_by("jeditaskid")[:limit]
    )
    if not tasks:
        return 0
    queues = queue_limits()
    round_mb = int(settings.AILURO["OOM_RETRY_ROUND_MB"])
    changed = 0
    for task in tasks:
        policy = task.learn_requests or {}
        samples = list(
            JobAttempt.objects.filter(
                job__task_id=task.pk,
                jobstatus=JobStatus.FINISHED,
                max_rss_kb__isnull=False,
                walltime_s__isnull=False,
            )
            .order_by("-endtime")
            .values_list("max_rss_kb", "walltime_s")[:MAX_SAMPLES]
        )
        if len(samples) < int(policy.get("min_samples", 20)):
            continue
        memory_cap, walltime_cap = _caps(task, queues)
        learned = learned_requests(
            rss_kb=[float(s[0] or 0) for s in samples],  # never None: filtered above
            walltimes_s=[float(s[1] or 0) for s in samples],
            policy=policy,
            memory_mb=task.memory_mb,
            walltime_s=task.walltime_s,
            memory_cap_mb=memory_cap,
            walltime_cap_s=walltime_cap,
            round_mb=round_mb,
        )
        changed += task_requests_apply(task=task, learned=learned, now=now)
    return changed


@transaction.atomic
def task_requests_apply(*, task: Task, learned: dict[str, Any], now: dt.datetime) -> int:
    """Record `learned` on the task (once: a second caller finds it set and changes nothing) and
    move the requests of its jobs not yet dispatched that still ask the label's submitted request:
    `defined` jobs in place, `activated` ones back to `defined` without a queue, so brokerage places
    them again on a queue that fits. Jobs whose requests were changed otherwise (an out-of-memory
    retry, an operator) keep theirs. Returns jobs changed."""
    recorded = Task.objects.filter(pk=task.pk, learned__isnull=True).update(
        learned={**learned, "at": now.isoformat()}, modified_at=now
    )
    if not recorded:
        return 0
    memory, walltime = learned["memory_mb"]["to"], learned["walltime_s"]["to"]
    reason = learned["reason"][:300]
    where = Q(task_id=task.pk, request_memory_mb=task.memory_mb, request_walltime_s=task.walltime_s)
    fields = {"request_memory_mb": memory, "request_walltime_s": walltime, "request_reason": reason}
    n = Job.objects.filter(where, jobstatus=JobStatus.DEFINED).update(**fields)
    n += len(
        jobs_transition_bulk(
            source=JobStatus.ACTIVATED,
            to=JobStatus.DEFINED,
            cause=reason,
            where=where,
            fields={"queue_id": None, **fields},
        )
    )
    log.info(
        "task %s learned its requests: %s",
        task.pk,
        reason,
        extra={"event": "task.requests_learned", "jeditaskid": task.pk, "jobs": n, "reason": reason},
    )
    return n
