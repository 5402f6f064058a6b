"""Job counts per state: per task (deltas written with each transition, folded into totals) and
per queue of what brokerage weighs, jobs waiting and in flight (deltas written by triggers on
PostgreSQL, folded the same way)."""

from __future__ import annotations

from django.db import models

from dispatcher.models.work import Task


class TaskCountDelta(models.Model):
    """Append-only per-task, per-state count changes written with each transition.

    Transitions only INSERT here, so concurrent transitions never wait on a shared counter row; the
    rollup folds deltas into TaskCount. Exact counts = TaskCount + unfolded deltas.
    """

    id = models.BigAutoField(primary_key=True)
    task = models.ForeignKey(
        Task,
        on_delete=models.CASCADE,
        related_name="+",
        db_column="jeditaskid",
        db_constraint=False,
        db_index=False,  # taskcountdelta_task_idx
    )
    jobstatus = models.CharField(max_length=16)
    delta = models.IntegerField()

    class Meta:
        indexes = [models.Index(fields=["task"], name="taskcountdelta_task_idx")]

    def __str__(self) -> str:
        return f"task {self.task_id} {self.jobstatus} {self.delta:+d}"


class TaskCount(models.Model):
    """Folded per-task, per-state job counts."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="counts", db_column="jeditaskid")
    jobstatus = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)

    class Meta:
        # No CHECK (count >= 0): PostgreSQL checks the proposed row of INSERT … ON CONFLICT before
        # it finds the conflict, so a fold carrying a net negative delta would be refused.
        constraints = [models.UniqueConstraint(fields=["task", "jobstatus"], name="taskcount_unique")]

    def __str__(self) -> str:
        return f"task {self.task_id} {self.jobstatus}: {self.count}"


class QueueCountDelta(models.Model):
    """Append-only per-queue count changes of the jobs waiting (`activated`) and in flight
    (`in_flight`: sent, starting or running), the kinds of `dispatcher.states.QUEUE_LOAD_KINDS`.

    PostgreSQL only: the job table's triggers append them for every write path (dispatcher
    migration 0022), and `jobs_transition_bulk` appends its own, summed, in its one statement. The
    rollup loop folds them into QueueCount; exact counts = QueueCount + unfolded deltas. The queue
    is its name, without a foreign key: a delta is never refused, and a queue's rows outlive it.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=64, db_column="computingsite")
    kind = models.CharField(max_length=16)
    delta = models.IntegerField()

    def __str__(self) -> str:
        return f"queue {self.queue} {self.kind} {self.delta:+d}"


class QueueCount(models.Model):
    """Folded per-queue counts of the jobs waiting and in flight (PostgreSQL only)."""

    queue = models.CharField(max_length=64, db_column="computingsite")
    kind = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "kind"], name="queuecount_unique")]

    def __str__(self) -> str:
        return f"queue {self.queue} {self.kind}: {self.count}"
