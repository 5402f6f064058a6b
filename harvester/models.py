"""Harvester workers: one batch job (or local process) running one pilot."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from dispatcher.models import Queue


class WorkerStatus(models.TextChoices):
    SUBMITTED = "submitted", "submitted"
    RUNNING = "running", "running"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    MISSED = "missed", "missed (lost by the batch system)"


WORKER_FINAL = frozenset(
    {WorkerStatus.FINISHED, WorkerStatus.FAILED, WorkerStatus.CANCELLED, WorkerStatus.MISSED}
)


class Worker(models.Model):
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="workers")
    plugin = models.CharField(max_length=32)
    batch_id = models.CharField(max_length=80, blank=True)
    status = models.CharField(max_length=16, choices=WorkerStatus.choices, default=WorkerStatus.SUBMITTED)
    node = models.CharField(max_length=128, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    n_jobs = models.PositiveIntegerField(default=0, help_text="Jobs this worker's pilot ran.")
    stdout_path = models.CharField(max_length=400, blank=True)
    stderr_path = models.CharField(max_length=400, blank=True)
    diag = models.CharField(max_length=500, blank=True)
    submitted_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=WorkerStatus.values), name="worker_status_valid")
        ]
        indexes = [
            # Provisioner: live workers of a queue; /site/<name>/ workers by state.
            models.Index(fields=["queue", "status"], name="worker_queue_status_idx"),
        ]

    def __str__(self) -> str:
        return f"worker {self.pk} ({self.plugin} {self.batch_id or '-'}) {self.status}"
