"""Actions on a submitted workflow: cancel, pause, resume, restart, retry, boost priority, set
memory. Each locks the workflow row first, so two actions on one workflow never interleave.

Status changes go through `jobs_transition_bulk`; the other columns (priority, memory,
pending_parents) are set-based UPDATEs. Access checks are the callers' (`dispatcher.access`);
`actor` is the name of who acts, for the jobs' state-change causes and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from dispatcher.models import Job, Task, Workflow
from dispatcher.queries import job_descendants, task_site_rules
from dispatcher.services.clusters import clusters_rerun_prepare
from dispatcher.services.final_jobs import final_jobs_release
from dispatcher.services.submit import queue_limits
from dispatcher.services.transitions import jobs_transition_bulk
from dispatcher.states import JOB_NON_FINAL, TASK_FINAL, JobStatus, TaskStatus, WorkflowStatus
from dispatcher.workflows import NewJob, WorkflowInvalid, dag_check_queues

log = logging.getLogger(__name__)

# Columns of the previous attempt cleared when a job runs again (its history is in JobAttempt).
_RERUN_RESET: dict[str, Any] = {
    "queue_id": None,
    "resource_type": "",
    "pilot_id": "",
    "worker_id": None,
    "batch_id": "",
    "node": "",
    "lease": "",
    "cpu_time_s": None,
    "max_rss_kb": None,
    "max_pss_kb": None,
    "actual_cores": None,
    "piloterrorcode": 0,
    "piloterrordiag": "",
    "exeerrorcode": 0,
    "exeerrordiag": "",
    "transexitcode": 0,
    "ddmerrorcode": 0,
    "ddmerrordiag": "",
    "jobdispatchererrorcode": 0,
    "jobdispatchererrordiag": "",
    "superrorcode": 0,
    "superrordiag": "",
    "taskbuffererrorcode": 0,
    "taskbuffererrordiag": "",
    "brokerageerrorcode": 0,
    "brokerageerrordiag": "",
    "dispatched_at": None,
    "starttime": None,
    "endtime": None,
    "heartbeat_at": None,
    "retry_after": None,
}


def _selection(
    workflow_id: int,
    labels: Sequence[str] | None,
    pandaids: Sequence[int] | None,
    jobstatus: Sequence[str] | None = None,
) -> Q:
    """The jobs of a workflow an action applies to; each given part narrows it."""
    where = Q(workflow_id=workflow_id)
    if labels:
        where &= Q(label__in=list(labels))
    if pandaids:
        where &= Q(pandaid__in=list(pandaids))
    if jobstatus:
        unknown = sorted(set(jobstatus) - set(JobStatus.values))
        if unknown:
            raise WorkflowInvalid(f"unknown job status {unknown[0]!r}", field="jobstatus")
        where &= Q(jobstatus__in=list(jobstatus))
    return where


@transaction.atomic
def workflow_cancel(
    *,
    workflow_id: int,
    actor: str,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
) -> dict[str, int]:
    """Cancel every non-final job of the workflow (or of the selected labels / jobs).

    Jobs in flight are cancelled too: their pilot learns it at its next heartbeat. Without a
    selection the workflow itself is marked cancelled. Returns {"cancelled": n}.
    """
    _workflow_lock(workflow_id)
    where = _selection(workflow_id, labels, pandaids, jobstatus)
    cause = f"cancelled by {actor}"
    total = 0
    for source in sorted(JOB_NON_FINAL):
        total += len(jobs_transition_bulk(source=source, to=JobStatus.CANCELLED, cause=cause, where=where))
    now = timezone.now()
    if not labels and not pandaids and not jobstatus:
        Workflow.objects.filter(pk=workflow_id).update(
            status=WorkflowStatus.CANCELLED, ended_at=now, modified_at=now
        )
        Task.objects.filter(workflow_id=workflow_id).exclude(
            status__in=[TaskStatus.DONE, TaskStatus.FINISHED, TaskStatus.FAILED]
        ).update(status=TaskStatus.ABORTED, ended_at=now, modified_at=now)
    _action_log("workflow.cancel", workflow_id, actor, cancelled=total)
    return {"cancelled": total}


@transaction.atomic
def workflow_pause(*, workflow_id: int, actor: str, labels: Sequence[str] | None = None) -> dict[str, int]:
    """Hold a workflow's tasks (or the selected labels' tasks), as JEDI's pauseTask.

    1. Non-final tasks of the selection become `paused`; without a selection the workflow too.
    2. Their activated jobs go back to `defined` (a pilot can no longer get them); brokerage skips
       the jobs of paused tasks, so neither they nor children released meanwhile are placed.
    3. Jobs already dispatched run on and report as usual.
    Returns {"paused_tasks": n, "held": jobs taken back from their queues}; a final workflow is a
    409.
    """
    _workflow_lock(workflow_id)
    tasks = _tasks_selected(workflow_id, labels, "pause")
    paused, held = _tasks_hold(workflow_id, tasks, reason=f"paused by {actor}")
    now = timezone.now()
    if not labels:
        Workflow.objects.filter(pk=workflow_id).update(status=WorkflowStatus.PAUSED, modified_at=now)
    _action_log("workflow.pause", workflow_id, actor, paused_tasks=paused, held=held)
    return {"paused_tasks": paused, "held": held}


def _tasks_hold(workflow_id: int, tasks: QuerySet[Task], *, reason: str) -> tuple[int, int]:
    """Pause the not yet paused tasks of `tasks` with `reason` and take their activated jobs back
    to `defined` (brokerage skips paused tasks, so nothing of theirs is dispatched any more).
    Returns (tasks paused, jobs held). The caller holds the workflow's lock."""
    now = timezone.now()
    ids = list(tasks.values_list("jeditaskid", flat=True))  # before the update moves them out of `tasks`
    paused = (
        Task.objects.filter(pk__in=ids)
        .exclude(status=TaskStatus.PAUSED)
        .update(status=TaskStatus.PAUSED, pause_reason=reason[:500], paused_at=now, modified_at=now)
    )
    held = jobs_transition_bulk(
        source=JobStatus.ACTIVATED,
        to=JobStatus.DEFINED,
        cause=reason[:300],
        where=Q(workflow_id=workflow_id, task__in=ids),
        fields={"queue_id": None},
    )
    return paused, len(held)


def paused_tasks_hold() -> int:
    """Take back to `defined` the activated jobs of paused tasks: those a brokerage run that read
    the paused tasks just before a pause committed has activated since. The `budgets` loop runs it,
    so a paused task has nothing to dispatch within one period whatever the race. One indexed read
    per paused task (few are paused at a time); returns jobs held."""
    held = 0
    for jeditaskid, workflow_id, reason in Task.objects.filter(status=TaskStatus.PAUSED).values_list(
        "jeditaskid", "workflow_id", "pause_reason"
    ):
        if Job.objects.filter(task_id=jeditaskid, jobstatus=JobStatus.ACTIVATED).exists():
            with transaction.atomic():
                held += len(
                    jobs_transition_bulk(
                        source=JobStatus.ACTIVATED,
                        to=JobStatus.DEFINED,
                        cause=(reason or "task paused")[:300],
                        where=Q(workflow_id=workflow_id, task_id=jeditaskid),
                        fields={"queue_id": None},
                    )
                )
    return held


@transaction.atomic
def task_budget_pause(*, jeditaskid: int, reason: str) -> bool:
    """Pause one task whose failed attempts went over its failure budget (`budgets.py`), as
    `workflow_pause` does for an operator: nothing more of it is dispatched, the reason is kept on
    the task (its page and its workflow's page show it) and logged as `task.budget_pause`. False
    when the task is paused or ended meanwhile."""
    workflow_id = Task.objects.values_list("workflow_id", flat=True).filter(pk=jeditaskid).first()
    if workflow_id is None:
        return False
    _workflow_lock(workflow_id)
    tasks = Task.objects.filter(pk=jeditaskid).exclude(status__in=[*TASK_FINAL, TaskStatus.PAUSED])
    if not tasks.exists():
        return False
    paused, held = _tasks_hold(workflow_id, tasks, reason=reason)
    log.warning(
        "task %s of workflow %s paused: %s",
        jeditaskid,
        workflow_id,
        reason,
        extra={
            "event": "task.budget_pause",
            "jeditaskid": jeditaskid,
            "workflow_id": workflow_id,
            "reason": reason,
            "held": held,
        },
    )
    return paused > 0


@transaction.atomic
def workflow_resume(*, workflow_id: int, actor: str, labels: Sequence[str] | None = None) -> dict[str, int]:
    """Release what `workflow_pause` (or a failure budget) held: the paused tasks (of the
    selection) run again, their pause reason is cleared, their failure budget counts from now on,
    and their jobs go back to brokerage; the rollup derives each task's and the workflow's state
    from its counts. Returns {"resumed_tasks": n}."""
    _workflow_lock(workflow_id)
    tasks = _tasks_selected(workflow_id, labels, "resume").filter(status=TaskStatus.PAUSED)
    now = timezone.now()
    # The failure budget counts again from here (docs/user-guide/workflows.md#failure-budgets).
    resumed = tasks.update(
        status=TaskStatus.RUNNING, pause_reason="", paused_at=None, budget_since=now, modified_at=now
    )
    still_paused = Task.objects.filter(workflow_id=workflow_id, status=TaskStatus.PAUSED).exists()
    if not still_paused:
        Workflow.objects.filter(pk=workflow_id, status=WorkflowStatus.PAUSED).update(
            status=WorkflowStatus.RUNNING, modified_at=now
        )
    _action_log("workflow.resume", workflow_id, actor, resumed_tasks=resumed)
    return {"resumed_tasks": resumed}


def _tasks_selected(workflow_id: int, labels: Sequence[str] | None, verb: str) -> QuerySet[Task]:
    """The non-final tasks of the workflow (of `labels`); refuses labels the workflow lacks and a
    workflow with nothing left to act on (409)."""
    tasks = Task.objects.filter(workflow_id=workflow_id)
    if labels:
        unknown = sorted(set(labels) - set(tasks.values_list("label", flat=True)))
        if unknown:
            raise WorkflowInvalid(f"workflow {workflow_id} has no label {unknown[0]!r}", field="labels")
        tasks = tasks.filter(label__in=list(labels))
    tasks = tasks.exclude(status__in=list(TASK_FINAL))
    if not tasks.exists():
        raise WorkflowInvalid(f"nothing to {verb}: every selected task has ended", status_code=409)
    return tasks


@transaction.atomic
def workflow_restart(
    *,
    workflow_id: int,
    actor: str,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
) -> dict[str, int]:
    """Run failed, cancelled and pruned jobs again; finished jobs never re-run.

    1. Move the selected failed / cancelled / pruned jobs back to `defined` (attempt number + 1
       when their last attempt was dispatched), clearing the previous attempt's columns.
    2. Recompute `pending_parents` of the restarted jobs from their parents' states, so jobs
       whose parents all finished are released at once and the rest wait.
    3. Final jobs wait again for the jobs run again (`_final_jobs_rearm`).
    4. Reopen the workflow and the touched tasks. Returns {"restarted": n}.
    """
    _workflow_lock(workflow_id)
    where = _selection(workflow_id, labels, pandaids, jobstatus)
    ids = _jobs_rerun(
        where,
        sources=(JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED),
        cause=f"restarted by {actor}",
    )
    ids += _cluster_partners_rerun(
        ids, sources=(JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED), cause=f"restarted by {actor}"
    )
    ids += _final_jobs_rearm(workflow_id, ids, cause=f"restarted by {actor}")
    _workflow_reopen(workflow_id, ids)
    _action_log("workflow.restart", workflow_id, actor, restarted=len(ids))
    return {"restarted": len(ids)}


@transaction.atomic
def workflow_retry(
    *,
    workflow_id: int,
    actor: str,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
) -> dict[str, int]:
    """Retry the failed jobs (of the selection) and the jobs pruned because of them.

    Unlike restart, cancelled jobs stay cancelled. The pruned descendants are found by walking
    down the edges through pruned jobs only (a recursive CTE), then everything goes through the
    same re-run as restart; final jobs wait again for them (`_final_jobs_rearm`). Returns
    {"retried": failed, "unpruned": pruned}.
    """
    _workflow_lock(workflow_id)
    failed = list(
        Job.objects.filter(
            _selection(workflow_id, labels, pandaids, jobstatus), jobstatus=JobStatus.FAILED
        ).values_list("pandaid", flat=True)
    )
    pruned = job_descendants(failed, jobstatus=JobStatus.PRUNED)
    cause = f"retried by {actor}"
    ids = _jobs_rerun(Q(pandaid__in=failed), sources=(JobStatus.FAILED,), cause=cause)
    ids += _jobs_rerun(Q(pandaid__in=pruned), sources=(JobStatus.PRUNED,), cause=cause)
    ids += _cluster_partners_rerun(ids, sources=(JobStatus.FAILED, JobStatus.PRUNED), cause=cause)
    ids += _final_jobs_rearm(workflow_id, ids, cause=cause)
    _workflow_reopen(workflow_id, ids)
    _action_log("workflow.retry", workflow_id, actor, retried=len(failed), unpruned=len(pruned))
    return {"retried": len(failed), "unpruned": len(pruned)}


def _jobs_rerun(where: Q, *, sources: Iterable[str], cause: str) -> list[int]:
    """Move the selected jobs in `sources` to `defined`, one bulk transition per (state, attempt,
    dispatched) group; the attempt number goes up only when the last attempt was handed out."""
    ids: list[int] = []
    for source in sources:
        groups = (
            Job.objects.filter(where, jobstatus=source)
            .order_by()
            .annotate(never=ExpressionWrapper(Q(dispatched_at__isnull=True), output_field=BooleanField()))
            .values_list("attemptnr", "never")
            .distinct()
        )
        for attemptnr, never_dispatched in sorted(set(groups)):
            new_attempt = attemptnr if never_dispatched else attemptnr + 1
            ids += jobs_transition_bulk(
                source=source,
                to=JobStatus.DEFINED,
                cause=cause,
                where=where & Q(attemptnr=attemptnr, dispatched_at__isnull=never_dispatched),
                fields={**_RERUN_RESET, "attemptnr": new_attempt},
            )
    _pending_parents_recompute(ids)
    return ids


def _cluster_partners_rerun(ids: Sequence[int], *, sources: Iterable[str], cause: str) -> list[int]:
    """Clusters run again with their members: the cluster jobs of re-run members and the members of
    re-run cluster jobs (those in `sources`, and the jobs pruned below them) go back to `defined`
    too; then the members wait for
    their cluster and each cluster's payload runs its unfinished members
    (`clusters.clusters_rerun_prepare`). Returns the jobs moved here."""
    if (
        not ids
        or not Job.objects.filter(Q(pandaid__in=ids, cluster__isnull=False) | Q(cluster_id__in=ids)).exists()
    ):
        return []
    clusters = Job.objects.filter(pandaid__in=ids, cluster__isnull=False).values("cluster_id")
    partners = (Q(pandaid__in=clusters) | Q(cluster_id__in=ids)) & ~Q(pandaid__in=ids)
    more = _jobs_rerun(partners, sources=sources, cause=cause)
    if JobStatus.PRUNED in sources and more:
        # What a pruned cluster took with it through its members comes back with them.
        below = job_descendants(more, jobstatus=JobStatus.PRUNED)
        more += _jobs_rerun(Q(pandaid__in=below), sources=(JobStatus.PRUNED,), cause=cause)
    clusters_rerun_prepare([*ids, *more])
    return more


def _final_jobs_rearm(workflow_id: int, rerun: Sequence[int], *, cause: str) -> list[int]:
    """Make the workflow's final jobs wait again after a restart or retry ran jobs again; returns
    the final jobs moved back to `defined` here.

    When some non-final job runs again, every final job that has ended (finished, failed or
    cancelled) goes back to `defined` (attempt + 1 when it was dispatched), an activated one goes
    back to `defined` without a queue, and all of them wait (`pending_parents` 1); a final job in
    flight runs on. Then the release check: a final job run again on its own (every other job has
    ended) is released at once.
    """
    if not rerun or not Workflow.objects.filter(pk=workflow_id, final_jobs__gt=0).exists():
        return []
    finals = Q(workflow_id=workflow_id, is_final=True)
    final_ids = set(Job.objects.filter(finals).values_list("pandaid", flat=True))
    moved: list[int] = []
    if any(pandaid not in final_ids for pandaid in rerun):
        moved = _jobs_rerun(
            finals, sources=(JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED), cause=cause
        )
        jobs_transition_bulk(
            source=JobStatus.ACTIVATED,
            to=JobStatus.DEFINED,
            cause=f"{cause}: the final job waits for the jobs run again",
            where=finals,
            fields={"queue_id": None},
        )
    # Released again below when no other job is left to run (a final job restarted on its own).
    Job.objects.filter(finals, jobstatus=JobStatus.DEFINED).update(pending_parents=1)
    final_jobs_release([workflow_id])
    return moved


def _pending_parents_recompute(pandaids: Sequence[int]) -> None:
    """pending_parents := parents not finished, for the given jobs (set-based, batched)."""
    for start in range(0, len(pandaids), 5000):
        batch = list(pandaids[start : start + 5000])
        placeholders = ", ".join(["%s"] * len(batch))
        sql = f"""
            UPDATE dispatcher_job SET pending_parents = (
                SELECT COUNT(*) FROM dispatcher_jobdependency d
                JOIN dispatcher_job p ON p.pandaid = d.parent_id
                WHERE d.child_id = dispatcher_job.pandaid AND p.jobstatus <> 'finished'
            )
            WHERE pandaid IN ({placeholders})
        """  # noqa: S608  (only placeholders are interpolated)
        with connection.cursor() as cursor:
            cursor.execute(sql, batch)


def _workflow_reopen(workflow_id: int, pandaids: Sequence[int]) -> None:
    if not pandaids:
        return
    now = timezone.now()
    Workflow.objects.filter(pk=workflow_id).update(
        status=WorkflowStatus.RUNNING, ended_at=None, modified_at=now
    )
    task_ids = set()
    for start in range(0, len(pandaids), 5000):
        task_ids |= set(
            Job.objects.filter(pandaid__in=pandaids[start : start + 5000]).values_list("task_id", flat=True)
        )
    Task.objects.filter(jeditaskid__in=task_ids).update(
        status=TaskStatus.RUNNING, ended_at=None, modified_at=now
    )


def _workflow_lock(workflow_id: int) -> None:
    """Serialise actions on one workflow (a cancel racing a restart would interleave otherwise).
    An archived workflow (`Workflow.archived_at`) is read-only: 409, naming why. The archive move
    takes the same lock, so no action slips in between its check and its move."""
    found = list(
        Workflow.objects.select_for_update().filter(pk=workflow_id).values_list("archived_at", flat=True)
    )
    if not found:
        raise Workflow.DoesNotExist(f"no workflow {workflow_id}")
    if found[0] is not None:
        raise WorkflowInvalid(
            f"workflow {workflow_id} is archived (its jobs moved to the archive on "
            f"{found[0]:%Y-%m-%d %H:%M} UTC) and read-only",
            status_code=409,
        )


@transaction.atomic
def workflow_boost_priority(
    *,
    workflow_id: int,
    priority: int | None = None,
    delta: int | None = None,
    actor: str,
) -> dict[str, int]:
    """Set (`priority`) or raise (`delta`) the priority of the workflow, its tasks and its
    non-final jobs; brokerage and dispatch order by `currentpriority`. Returns {"jobs": n,
    "priority": new workflow priority}."""
    if (priority is None) == (delta is None):
        raise WorkflowInvalid("give either priority or delta", field="priority")
    _workflow_lock(workflow_id)
    now = timezone.now()
    jobs = Job.objects.filter(workflow_id=workflow_id, jobstatus__in=sorted(JOB_NON_FINAL))
    if priority is not None:
        Workflow.objects.filter(pk=workflow_id).update(priority=priority, modified_at=now)
        Task.objects.filter(workflow_id=workflow_id).update(priority=priority, modified_at=now)
        n = jobs.update(currentpriority=priority)
    else:
        Workflow.objects.filter(pk=workflow_id).update(priority=F("priority") + delta, modified_at=now)
        Task.objects.filter(workflow_id=workflow_id).update(priority=F("priority") + delta, modified_at=now)
        n = jobs.update(currentpriority=F("currentpriority") + delta)
    new = Workflow.objects.values_list("priority", flat=True).get(pk=workflow_id)
    _action_log("workflow.boost_priority", workflow_id, actor, jobs=n, priority=new)
    return {"jobs": n, "priority": new}


# States whose memory request may change: not yet dispatched, or final and restartable.
_MEMORY_SETTABLE = (
    JobStatus.DEFINED,
    JobStatus.ACTIVATED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.PRUNED,
)


@transaction.atomic
def jobs_set_memory(
    *,
    workflow_id: int,
    memory_mb: int,
    labels: Sequence[str] | None = None,
    pandaids: Sequence[int] | None = None,
    jobstatus: Sequence[str] | None = None,
    actor: str,
) -> dict[str, int]:
    """Set the memory request of the selected jobs that are not in flight or finished.

    1. Refuse a request no queue can satisfy for the selection's cores, walltime and disk (within
       each label's site constraints).
    2. Activated jobs go back to `defined` without a queue, so brokerage places them again on a
       queue that fits; defined and restartable final jobs are updated in place.
    3. With labels and no job selection, the labels' tasks take the new default too.
    Returns {"jobs": n}.
    """
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb < 1:
        raise WorkflowInvalid(f"memory_mb must be a positive integer, got {memory_mb!r}", field="memory_mb")
    _workflow_lock(workflow_id)
    where = _selection(workflow_id, labels, pandaids, jobstatus) & Q(jobstatus__in=_MEMORY_SETTABLE)
    shapes = (
        Job.objects.filter(where)
        .order_by()
        .values_list("label", "request_cores", "request_walltime_s", "request_disk_mb", "name")
    )
    probes: dict[tuple[str, int, int, int], str] = {}
    for label, cores, walltime, disk, name in shapes.iterator():
        probes.setdefault((label, cores, walltime, disk), name)
    dag_check_queues(
        [
            NewJob(name=name, label=lb, command="", memory_mb=memory_mb, cores=c, walltime_s=w, disk_mb=d)
            for (lb, c, w, d), name in probes.items()
        ],
        queue_limits(),
        {label: rule for _, label, rule in task_site_rules(Task.objects.filter(workflow_id=workflow_id))},
    )
    # In-place first: the activated jobs moved back below would otherwise be counted twice.
    n = Job.objects.filter(where).exclude(jobstatus=JobStatus.ACTIVATED).update(request_memory_mb=memory_mb)
    n += len(
        jobs_transition_bulk(
            source=JobStatus.ACTIVATED,
            to=JobStatus.DEFINED,
            cause=f"memory set to {memory_mb} MB by {actor}",
            where=where,
            fields={"queue_id": None, "request_memory_mb": memory_mb},
        )
    )
    if labels and not pandaids and not jobstatus:
        Task.objects.filter(workflow_id=workflow_id, label__in=list(labels)).update(
            memory_mb=memory_mb,
            max_memory_mb=Greatest(F("max_memory_mb"), memory_mb),
            modified_at=timezone.now(),
        )
    _action_log("jobs.set_memory", workflow_id, actor, jobs=n, memory_mb=memory_mb)
    return {"jobs": n}


def _action_log(event: str, workflow_id: int, actor: str, **result: Any) -> None:
    log.info(
        "%s on workflow %s by %s: %s",
        event,
        workflow_id,
        actor,
        result,
        extra={"event": event, "workflow_id": workflow_id, "actor": actor, **result},
    )
