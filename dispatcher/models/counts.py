"""Per-task job counts per state: deltas written with each transition, folded into totals."""

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
