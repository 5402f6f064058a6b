"""The job archive: final workflows' jobs and what hangs off them, moved out of the live tables by
the janitor (`dispatcher.services.archive`).

Each archive table takes its columns from the abstract base its live table is built on
(`JobColumns`, `JobAttemptColumns`, `FileColumns`, `JobStatusLogColumns`), so the two never drift,
plus `workflow_ended_at`, the end of the archived workflow. On PostgreSQL the tables are
partitioned by month of `workflow_ended_at` (dispatcher migration 0012; partitions are created by
the move and dropped whole by the retention), and keyed by (id, workflow_ended_at). On SQLite they
are plain tables.

Workflows and tasks stay where they are (marked by `Workflow.archived_at`), so their per-task
counts, campaigns' references and the monitor's summaries are untouched by a move.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from dispatcher.models.sites import Queue
from dispatcher.models.work import (
    FileColumns,
    JobAttemptColumns,
    JobColumns,
    JobStatusLogColumns,
    Task,
    Workflow,
)


class ArchivedJob(JobColumns):
    """A job of an archived workflow, as it was when the workflow was archived."""

    pandaid = models.BigIntegerField(primary_key=True)
    task = models.ForeignKey(
        Task, on_delete=models.DO_NOTHING, related_name="+", db_column="jeditaskid", db_constraint=False
    )
    workflow = models.ForeignKey(Workflow, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    queue = models.ForeignKey(
        Queue,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="+",
        to_field="name",
        db_column="computingsite",
        db_constraint=False,
        db_index=False,
    )
    # Kept as a plain column: the archive has no constraints between its rows.
    cluster = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    creationtime = models.DateTimeField()
    workflow_ended_at = models.DateTimeField()

    class Meta:
        ordering = ["-pandaid"]
        indexes = [
            models.Index(fields=["statechangetime"], name="jobarchive_time_idx"),
            # /site/<name>/ when its window reaches the archive: the live table's job_ended_stats_idx.
            models.Index(
                fields=["queue", "statechangetime"],
                include=[
                    "jobstatus",
                    "node",
                    "starttime",
                    "endtime",
                    "cpu_time_s",
                    "request_cores",
                    "max_rss_kb",
                ],
                name="jobarchive_ended_stats_idx",
                condition=Q(jobstatus__in=["finished", "failed"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pandaid} {self.name} ({self.jobstatus}, archived)"


class ArchivedJobAttempt(JobAttemptColumns):
    id = models.BigIntegerField(primary_key=True)
    job = models.ForeignKey(
        ArchivedJob, on_delete=models.DO_NOTHING, related_name="attempts", db_constraint=False
    )
    workflow_ended_at = models.DateTimeField()

    class Meta:
        ordering = ["job", "attemptnr"]


class ArchivedFile(FileColumns):
    id = models.BigIntegerField(primary_key=True)
    job = models.ForeignKey(
        ArchivedJob, on_delete=models.DO_NOTHING, related_name="files", db_constraint=False
    )
    workflow_ended_at = models.DateTimeField()


class ArchivedJobStatusLog(JobStatusLogColumns):
    id = models.BigIntegerField(primary_key=True)
    job = models.ForeignKey(
        ArchivedJob, on_delete=models.DO_NOTHING, related_name="status_log", db_constraint=False
    )
    workflow_ended_at = models.DateTimeField()

    class Meta:
        ordering = ["job", "time", "id"]


class ArchivedJobDependency(models.Model):
    id = models.BigIntegerField(primary_key=True)
    parent = models.ForeignKey(
        ArchivedJob, on_delete=models.DO_NOTHING, related_name="child_edges", db_constraint=False
    )
    child = models.ForeignKey(
        ArchivedJob, on_delete=models.DO_NOTHING, related_name="parent_edges", db_constraint=False
    )
    workflow_ended_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.parent_id} -> {self.child_id} (archived)"
