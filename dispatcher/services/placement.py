"""Placing released jobs on queues: the `brokerage` loop's one step (config/loops.py), which feeds
the pure ranking of `dispatcher.brokerage` from the database and applies its placements.

An out-of-memory retry comes back `defined` with no queue and the raised memory, and lands here on a
queue whose memory range fits.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from django.db.models import Q
from django.utils import timezone

from dispatcher.brokerage import (
    ANYWHERE,
    NO_QUEUE_CODE,
    JobNeeds,
    QueueInfo,
    ResourceTypeInfo,
    broker,
)
from dispatcher.models import Job, Queue, QueueStatus, ResourceType, Task
from dispatcher.queries import queue_loads, task_site_rules
from dispatcher.services.transitions import jobs_transition_bulk
from dispatcher.states import JobStatus, TaskStatus

log = logging.getLogger(__name__)

# A job no queue can run is looked at again after this long (a queue may come online meanwhile);
# without the pause it would head every batch and starve the jobs behind it.
UNPLACEABLE_BACKOFF = dt.timedelta(seconds=60)


def _queue_infos() -> list[QueueInfo]:
    queues = list(
        Queue.objects.filter(status__in=[QueueStatus.ONLINE, QueueStatus.TEST])
        .select_related("site")
        .prefetch_related("resource_types")
    )
    loads = queue_loads([q.name for q in queues])
    return [
        QueueInfo(
            name=q.name,
            status=q.status,
            min_rss_mb=q.min_rss_mb,
            max_rss_mb=q.max_rss_mb,
            max_cores=q.max_cores,
            max_walltime_s=q.max_walltime_s,
            max_disk_mb=q.max_disk_mb,
            resource_types=frozenset(rt.name for rt in q.resource_types.all()),
            activated=loads[q.name].get("activated", 0),
            in_flight=loads[q.name].get("in_flight", 0),
            site=q.site.name,
        )
        for q in queues
    ]


def broker_one_batch(*, limit: int = 2000) -> int:
    """Activate up to `limit` released jobs (defined, no pending parents, backoff passed) onto
    queues; returns how many were activated.

    1. Read the released jobs in dispatch order (index job_defined_ready_idx), but not those of
       paused tasks.
    2. Rank queues for each (dispatcher.brokerage.broker, pure), within its task's site constraints.
    3. Per (queue, resource type): one `jobs_transition_bulk` defined → activated; it re-checks the
       state under lock, so jobs changed meanwhile are skipped.
    4. Jobs no queue can run keep `defined` with brokerageerrorcode/diag and a short backoff.
    """
    now = timezone.now()
    # Jobs of paused tasks wait (workflow_pause); few tasks are paused at a time (task_status_idx).
    paused = list(Task.objects.filter(status=TaskStatus.PAUSED).values_list("jeditaskid", flat=True))
    rows = list(
        Job.objects.filter(jobstatus=JobStatus.DEFINED, pending_parents=0)
        .filter(Q(retry_after__isnull=True) | Q(retry_after__lte=now))
        .exclude(task_id__in=paused)
        .order_by("-currentpriority", "pandaid")
        .values_list(
            "pandaid",
            "request_memory_mb",
            "request_cores",
            "request_walltime_s",
            "request_disk_mb",
            "resource_type",
            "prodsourcelabel",
            "produsername",
            "currentpriority",
            "task_id",
        )[:limit]
    )
    if not rows:
        return 0
    rules = {
        tid: rule
        for tid, _, rule in task_site_rules(Task.objects.filter(jeditaskid__in={r[9] for r in rows}))
    }
    jobs = [
        JobNeeds(
            pandaid=r[0],
            memory_mb=r[1],
            cores=r[2],
            walltime_s=r[3],
            disk_mb=r[4],
            resource_type=r[5],
            prodsourcelabel=r[6],
            user=r[7],
            priority=r[8],
            sites=rules.get(r[9], ANYWHERE),
        )
        for r in rows
    ]
    types = [
        ResourceTypeInfo(rt.name, rt.min_cores, rt.max_cores, rt.min_ram_per_core_mb, rt.max_ram_per_core_mb)
        for rt in ResourceType.objects.all()
    ]
    placements = broker(jobs, _queue_infos(), types)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    refused: dict[str, list[int]] = defaultdict(list)
    for placement in placements:
        if placement.queue is None:
            refused[placement.reason[:500]].append(placement.pandaid)
        else:
            groups[(placement.queue, placement.resource_type)].append(placement.pandaid)
    activated = 0
    for (queue, rtype), ids in sorted(groups.items()):
        activated += len(
            jobs_transition_bulk(
                source=JobStatus.DEFINED,
                to=JobStatus.ACTIVATED,
                cause=f"brokered to {queue}",
                pandaids=ids,
                fields={
                    "queue_id": queue,
                    "resource_type": rtype,
                    "brokerageerrorcode": 0,
                    "brokerageerrordiag": "",
                },
            )
        )
    for reason, ids in refused.items():
        # Not a status change: the job stays defined, with the reason for the monitor.
        Job.objects.filter(pandaid__in=ids, jobstatus=JobStatus.DEFINED).update(
            brokerageerrorcode=NO_QUEUE_CODE, brokerageerrordiag=reason, retry_after=now + UNPLACEABLE_BACKOFF
        )
    log.info(
        "brokerage: %d activated, %d unplaceable",
        activated,
        sum(len(v) for v in refused.values()),
        extra={
            "event": "brokerage.batch",
            "activated": activated,
            "unplaceable": sum(len(v) for v in refused.values()),
        },
    )
    return activated
