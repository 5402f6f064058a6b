"""Final jobs (docs/user-guide/workflows.md#final-jobs): a job that runs once every other job of its
workflow has ended — finished, failed for good, pruned, cancelled or closed — whatever the outcome,
as Rubin BPS's `finalJob`.

A final job has no parents and no children. It is written `defined` with `is_final` set and
`pending_parents` = 1 (waiting for the workflow), and its workflow's `final_jobs` counts it. The
release is set-based and paid only by workflows that have final jobs:

* every write that moves jobs into a final state learns, in a statement it runs anyway, whether
  their workflow has final jobs (`job_transition`, `jobs_transition_bulk`, the finished fast path);
  only then `final_jobs_release` runs: one EXISTS over the workflow's tasks' non-final jobs (the
  `job_task_status_idx` index, so it reads only jobs that have not ended), and when none is left,
  one UPDATE setting the waiting final jobs' `pending_parents` to 0; brokerage then places them as
  any released job;
* two last jobs ending at once in two transactions each see the other still running; the rollup
  loop calls `final_jobs_release` for the workflows it rolls up (a workflow with a waiting final
  job always is one), so such a release waits at most one rollup period.

Waiting final jobs are locked with SKIP LOCKED: a transaction that holds one (a cancel) changes
its state itself, and the release never waits for a lock, so it cannot deadlock with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q

from dispatcher.models import Job, Task, Workflow
from dispatcher.states import JOB_NON_FINAL, JobStatus

log = logging.getLogger(__name__)


def workflows_with_final_jobs(task_ids: Iterable[int]) -> list[int]:
    """The workflows of these tasks that have final jobs (one query)."""
    ids = sorted(set(task_ids))
    if not ids:
        return []
    return sorted(
        set(Workflow.objects.filter(final_jobs__gt=0, tasks__jeditaskid__in=ids).values_list("pk", flat=True))
    )


def workflow_jobs_pending(workflow_id: int) -> bool:
    """Whether some job of the workflow other than its final jobs has not ended (the EXISTS of the
    release)."""
    tasks = Task.objects.filter(workflow_id=workflow_id).values("jeditaskid")
    return Job.objects.filter(task__in=tasks, jobstatus__in=sorted(JOB_NON_FINAL), is_final=False).exists()


@transaction.atomic
def final_jobs_release(workflow_ids: Iterable[int]) -> int:
    """Release the waiting final jobs of each workflow none of whose other jobs is still to end;
    returns how many were released."""
    released = 0
    for workflow_id in sorted(set(workflow_ids)):
        if workflow_jobs_pending(workflow_id):
            continue
        tasks = Task.objects.filter(workflow_id=workflow_id).values("jeditaskid")
        waiting = Q(task__in=tasks, jobstatus=JobStatus.DEFINED, is_final=True, pending_parents__gt=0)
        ids = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(waiting)
            .order_by("pandaid")
            .values_list("pandaid", flat=True)
        )
        if not ids:
            continue
        n = Job.objects.filter(waiting, pandaid__in=ids).update(pending_parents=0)
        released += n
        log.info(
            "workflow %s: %d final job(s) released",
            workflow_id,
            n,
            extra={"event": "workflow.final_release", "workflow_id": workflow_id, "released": n},
        )
    return released


def final_jobs_hold(workflow_id: int) -> int:
    """Make the workflow's released final jobs that brokerage has not placed yet wait again, when
    jobs came back to run (a late report bringing back pruned descendants); returns how many."""
    if not Workflow.objects.filter(pk=workflow_id, final_jobs__gt=0).exists():
        return 0
    if not workflow_jobs_pending(workflow_id):
        return 0
    tasks = Task.objects.filter(workflow_id=workflow_id).values("jeditaskid")
    return Job.objects.filter(
        task__in=tasks, jobstatus=JobStatus.DEFINED, is_final=True, pending_parents=0
    ).update(pending_parents=1)
