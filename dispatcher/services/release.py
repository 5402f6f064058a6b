"""The DAG side of a job's end: its children released when it finished, its descendants pruned
when it failed for good. Used by the end of an attempt (`attempts`), a late report and clusters."""

from __future__ import annotations

from django.db.models import F

from dispatcher.models import Job, JobDependency
from dispatcher.queries import job_descendants
from dispatcher.services.transitions import jobs_transition_bulk
from dispatcher.states import JOB_NON_FINAL, JobStatus


def job_children_release(pandaid: int) -> int:
    """Decrement the children's pending_parents; returns how many reached zero.

    Children are locked in pandaid order first (two parents finishing at once then lock their shared
    children in the same order and cannot deadlock), then updated in one statement.
    """
    children = JobDependency.objects.filter(parent_id=pandaid).values("child_id")
    locked = list(
        Job.objects.select_for_update()
        .filter(pandaid__in=children)
        .order_by("pandaid")
        .values_list("pandaid", "pending_parents")
    )
    if not locked:
        return 0
    ids = [child for child, _ in locked]
    Job.objects.filter(pandaid__in=ids, pending_parents__gt=0).update(
        pending_parents=F("pending_parents") - 1
    )
    return sum(1 for _, pending in locked if pending == 1)


def descendants_prune(pandaid: int, *, cause: str) -> int:
    ids = job_descendants([pandaid])
    if not ids:
        return 0
    pruned = 0
    # Descendants of an unfinished parent are normally `defined`; after a restart some may be in
    # other non-final states. Each source state is one set-based transition.
    states = set(
        Job.objects.filter(pandaid__in=ids, jobstatus__in=JOB_NON_FINAL).values_list("jobstatus", flat=True)
    )
    for source in sorted(states):
        pruned += len(jobs_transition_bulk(source=source, to=JobStatus.PRUNED, cause=cause, pandaids=ids))
    return pruned
