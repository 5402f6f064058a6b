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
    """Prune every not-yet-final descendant of the job; returns how many.

    A pruned cluster job takes its members still waiting with it (they run only inside it), and
    their descendants (docs/decisions/0010-clusters-of-member-jobs.md).
    """
    ids = job_descendants([pandaid])
    pruned = 0
    while ids:
        pruned += _prune(ids, cause=cause)
        members = list(
            Job.objects.filter(cluster_id__in=ids, jobstatus__in=JOB_NON_FINAL).values_list(
                "pandaid", flat=True
            )
        )
        if not members:
            break
        cause = f"{cause}; its cluster job was pruned"
        ids = sorted({*members, *job_descendants(members)})
    return pruned


def _prune(ids: list[int], *, cause: str) -> int:
    pruned = 0
    # Descendants of an unfinished parent are normally `defined`; after a restart some may be in
    # other non-final states. Each source state is one set-based transition.
    states = set(
        Job.objects.filter(pandaid__in=ids, jobstatus__in=JOB_NON_FINAL).values_list("jobstatus", flat=True)
    )
    for source in sorted(states):
        pruned += len(jobs_transition_bulk(source=source, to=JobStatus.PRUNED, cause=cause, pandaids=ids))
    return pruned
