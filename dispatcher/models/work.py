"""The work itself: workflows, tasks, jobs, their attempts, dependencies, files and logs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from dispatcher.models.sites import Queue
from dispatcher.states import JobStatus, TaskStatus, WorkflowStatus


class Workflow(models.Model):
    """One submitted DAG. Its tasks are its labels; its jobs are its nodes."""

    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="workflows")
    status = models.CharField(max_length=16, choices=WorkflowStatus.choices, default=WorkflowStatus.SUBMITTED)
    priority = models.IntegerField(default=500)
    spec = models.JSONField(
        default=dict, blank=True, help_text="The spec as submitted, for audit and resubmission."
    )
    attempt = models.PositiveIntegerField(default=1, help_text="Attempt number within a campaign group.")
    final_jobs = models.PositiveSmallIntegerField(
        default=0,
        help_text="How many final jobs it has (run once every other job has ended); set at submission.",
    )
    task_edges = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="Its task graph, [[parent task, child task], ...] derived from the job edges at "
        "submission; null for a workflow submitted before it was stored (then read from the job edges).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its jobs moved to the archive tables (dispatcher/services/archive.py); "
        "an archived workflow is read-only.",
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=WorkflowStatus.values), name="workflow_status_valid"
            ),
        ]
        indexes = [
            # /workflows/ filtered by state, newest first.
            models.Index(fields=["status", "-id"], name="workflow_status_idx"),
            # /user/<name>/ and the owner filter of the API.
            models.Index(fields=["owner", "-id"], name="workflow_owner_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.pk}:{self.name}"


class Task(models.Model):
    """One pipeline label of a workflow (chunked above a size limit), as a JEDI task."""

    jeditaskid = models.BigAutoField(primary_key=True)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="tasks")
    label = models.CharField(max_length=100)
    chunk = models.PositiveIntegerField(
        default=0, help_text="Chunk index when a label is split into several tasks."
    )
    name = models.CharField(max_length=250)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.READY)
    username = models.CharField(max_length=150, db_index=False)
    priority = models.IntegerField(default=500)
    max_attempts = models.PositiveIntegerField(default=3)
    memory_mb = models.PositiveIntegerField(default=2000, help_text="Default request of the label's jobs.")
    max_memory_mb = models.PositiveIntegerField(default=64000, help_text="Cap for out-of-memory retries.")
    cores = models.PositiveIntegerField(default=1)
    walltime_s = models.PositiveIntegerField(default=3600)
    disk_mb = models.PositiveIntegerField(default=1000)
    retry_policy = models.JSONField(default=dict, blank=True)
    # Site constraints (PanDA's includedSite / excludedSite), read by brokerage for every release.
    included_sites = models.JSONField(
        default=list,
        blank=True,
        help_text="Queue or site names (wildcards *) the jobs may run at; empty: any.",
    )
    excluded_sites = models.JSONField(
        default=list, blank=True, help_text="Queue or site names (wildcards *) the jobs must not run at."
    )
    # The failure budget (docs/user-guide/workflows.md#failure-budgets): None takes the site's
    # default (AILURO_FAILURE_BUDGET_*), False switches it off, a mapping sets the label's own.
    failure_budget = models.JSONField(
        null=True, blank=True, default=None, help_text="{core_hours, fraction, min_attempts}, false, or null."
    )
    budget_since = models.DateTimeField(
        null=True, blank=True, help_text="The budget counts failed attempts ended from here (set on resume)."
    )
    pause_reason = models.CharField(max_length=500, blank=True, help_text="Why the task is paused.")
    paused_at = models.DateTimeField(null=True, blank=True)
    # Learned requests (docs/user-guide/workflows.md#learned-requests): None is off, else
    # {percentile, margin, min_samples}; `learned` records what was learned, once.
    learn_requests = models.JSONField(
        null=True, blank=True, default=None, help_text="{percentile, margin, min_samples} or null (off)."
    )
    learned = models.JSONField(
        null=True, blank=True, default=None, help_text="The requests learned from measurements, and why."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-jeditaskid"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=TaskStatus.values), name="task_status_valid"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="task_max_attempts_positive"),
            models.CheckConstraint(condition=Q(max_memory_mb__gte=F("memory_mb")), name="task_memory_cap"),
            models.UniqueConstraint(fields=["workflow", "label", "chunk"], name="task_unique_label_chunk"),
        ]
        indexes = [
            # /tasks/ filtered by state, newest first.
            models.Index(fields=["status", "-jeditaskid"], name="task_status_idx"),
            # /user/<name>/ task list.
            models.Index(fields=["username", "-jeditaskid"], name="task_username_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.jeditaskid}:{self.name}"


class JobColumns(models.Model):
    """The columns of a job, shared by the live table (`Job`) and its archive
    (`dispatcher.models.archive.ArchivedJob`), so the two never drift."""

    # No single-column indexes on the foreign keys: each leads a composite index below
    # (job_task_status_idx, job_unique_name_in_workflow, job_queue_status_time_idx), and every
    # index costs each non-HOT update of a job row an insertion. For the same reason jobs of a
    # workflow (restart, cancel, DAG slices) are found through job_unique_name_in_workflow.
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="jobs", db_column="jeditaskid", db_index=False
    )
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="jobs", db_index=False)
    name = models.CharField(max_length=250)
    label = models.CharField(max_length=100)
    data_id = models.JSONField(
        default=dict, blank=True, help_text="Data-id keys of the node, e.g. {visit: 1, detector: 3}."
    )
    jobstatus = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.DEFINED)
    prodsourcelabel = models.CharField(max_length=20, default="managed")
    produsername = models.CharField(max_length=150)
    attemptnr = models.PositiveIntegerField(default=1)
    currentpriority = models.IntegerField(default=500)
    pending_parents = models.PositiveIntegerField(
        default=0,
        help_text="Parents not yet finished (a final job: 1 while other jobs of its workflow have not "
        "ended); 0 releases the job.",
    )
    is_final = models.BooleanField(
        default=False,
        help_text="A final job: no parents; released once every other job of the workflow has ended, "
        "whatever the outcome, and never pruned.",
    )
    cluster = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        db_index=False,
        on_delete=models.CASCADE,
        related_name="members",
        help_text="A cluster member: the cluster job that runs it (docs/decisions/0010). A member is "
        "never dispatched itself (pending_parents keeps one extra count) and takes its state from "
        "its cluster's attempts.",
    )

    # Where it runs.
    queue = models.ForeignKey(
        Queue,
        db_index=False,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="jobs",
        to_field="name",
        db_column="computingsite",
    )
    resource_type = models.CharField(max_length=32, blank=True)
    pilot_id = models.CharField(max_length=200, blank=True)
    worker_id = models.BigIntegerField(
        null=True, blank=True, help_text="Harvester worker that ran the pilot."
    )
    batch_id = models.CharField(max_length=80, blank=True)
    node = models.CharField(max_length=128, blank=True, db_column="modificationhost")
    lease = models.CharField(
        max_length=32, blank=True, help_text="Token of the current dispatch; updates must echo it."
    )

    # What it runs.
    transformation = models.CharField(max_length=250, default="runpayload.sh")
    command = models.TextField(help_text="Shell command of the payload (sent to pilots as jobPars).")
    environment = models.JSONField(default=dict, blank=True)
    container_image = models.CharField(max_length=250, blank=True)

    # Requested resources (the current attempt's; an out-of-memory retry raises memory).
    request_memory_mb = models.PositiveIntegerField(default=2000)
    request_cores = models.PositiveIntegerField(default=1)
    request_walltime_s = models.PositiveIntegerField(default=3600)
    request_disk_mb = models.PositiveIntegerField(default=1000)
    # Why the requests are not the submitted ones (learned from measurements, resized by a retry).
    request_reason = models.CharField(max_length=300, blank=True, default="", db_default="")

    # Measured by the pilot.
    cpu_time_s = models.FloatField(null=True, blank=True)
    max_rss_kb = models.BigIntegerField(null=True, blank=True)
    max_pss_kb = models.BigIntegerField(null=True, blank=True)
    actual_cores = models.FloatField(null=True, blank=True)

    # Error families, with PanDA's column names (docs/architecture.md#errors-and-logs).
    piloterrorcode = models.IntegerField(default=0)
    piloterrordiag = models.CharField(max_length=500, blank=True)
    exeerrorcode = models.IntegerField(default=0)
    exeerrordiag = models.CharField(max_length=500, blank=True)
    transexitcode = models.IntegerField(default=0)
    ddmerrorcode = models.IntegerField(default=0)
    ddmerrordiag = models.CharField(max_length=500, blank=True)
    jobdispatchererrorcode = models.IntegerField(default=0)
    jobdispatchererrordiag = models.CharField(max_length=500, blank=True)
    superrorcode = models.IntegerField(default=0)
    superrordiag = models.CharField(max_length=500, blank=True)
    taskbuffererrorcode = models.IntegerField(default=0)
    taskbuffererrordiag = models.CharField(max_length=500, blank=True)
    brokerageerrorcode = models.IntegerField(default=0)
    brokerageerrordiag = models.CharField(max_length=500, blank=True)

    # Times (UTC).
    creationtime = models.DateTimeField(auto_now_add=True)
    statechangetime = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    starttime = models.DateTimeField(null=True, blank=True)
    endtime = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_column="modificationtime")
    retry_after = models.DateTimeField(
        null=True, blank=True, help_text="Backoff: not brokered before this time."
    )

    class Meta:
        abstract = True


class Job(JobColumns):
    """One node of a DAG; keeps its pandaid for life. The current attempt lives on the row."""

    pandaid = models.BigAutoField(primary_key=True)

    class Meta:
        ordering = ["-pandaid"]
        constraints = [
            models.CheckConstraint(condition=Q(jobstatus__in=JobStatus.values), name="job_status_valid"),
            models.CheckConstraint(condition=Q(attemptnr__gte=1), name="job_attemptnr_positive"),
            models.CheckConstraint(condition=Q(request_cores__gte=1), name="job_cores_positive"),
            models.CheckConstraint(condition=Q(request_memory_mb__gte=1), name="job_memory_positive"),
            # An activated job has a queue: dispatch matches on it.
            models.CheckConstraint(
                condition=~Q(jobstatus=JobStatus.ACTIVATED) | Q(queue__isnull=False),
                name="job_activated_has_queue",
            ),
            # A job is released only when every parent finished.
            models.CheckConstraint(
                condition=Q(jobstatus=JobStatus.DEFINED)
                | Q(pending_parents=0)
                | Q(jobstatus__in=["cancelled", "closed", "pruned"]),
                name="job_released_without_pending_parents",
            ),
            models.UniqueConstraint(fields=["workflow", "name"], name="job_unique_name_in_workflow"),
        ]
        indexes = [
            # getJob: the partial index on activated jobs per queue, in dispatch order (docs/architecture.md#hot-paths).
            models.Index(
                F("queue"),
                F("currentpriority").desc(),
                F("pandaid"),
                name="job_activated_dispatch_idx",
                condition=Q(jobstatus=JobStatus.ACTIVATED),
            ),
            # Brokerage: released jobs waiting for a queue.
            models.Index(
                fields=["currentpriority", "pandaid"],
                name="job_defined_ready_idx",
                condition=Q(jobstatus=JobStatus.DEFINED, pending_parents=0),
            ),
            # Watcher: jobs in flight by state age. Not by heartbeat time: a heartbeat then changes
            # no indexed column, so PostgreSQL updates the row in place (HOT) without touching any
            # of the table's indexes; the watcher filters the in-flight rows on heartbeat_at.
            models.Index(
                fields=["jobstatus", "statechangetime"],
                name="job_inflight_state_idx",
                condition=Q(jobstatus__in=["sent", "starting", "running", "holding"]),
            ),
            # A cluster job's members (only member rows are in it; the column never changes).
            models.Index(
                fields=["cluster"], name="job_cluster_member_idx", condition=Q(cluster__isnull=False)
            ),
            # Task page and counters recomputation.
            models.Index(fields=["task", "jobstatus"], name="job_task_status_idx"),
            # A task's job list (/jobs/?jeditaskid=N): newest changes first in the page's order
            # (NULLs last, pandaid breaking ties: no sort), and a window of it a range; its
            # default order by pandaid sorts the task's rows of the window found here. PostgreSQL only
            # (migration 0015): SQLite has no NULLS LAST in an index.
            models.Index(
                F("task"),
                F("statechangetime").desc(nulls_last=True),
                F("pandaid").desc(),
                name="job_task_time_idx",
            ),
            # /jobs/ and /dash/ by site and time window.
            models.Index(fields=["queue", "jobstatus", "statechangetime"], name="job_queue_status_time_idx"),
            # /user/<name>/ job list.
            models.Index(fields=["produsername", "statechangetime"], name="job_user_time_idx"),
            # /jobs/ under a user wildcard in pandaid order: each matching user's newest, merged
            # (pandamon.queries.jobs.jobs_page), not the primary key walked past other users' jobs.
            models.Index(fields=["produsername", "pandaid"], name="job_user_pandaid_idx"),
            # The same for a region's, a site's or a negation's queues.
            models.Index(fields=["queue", "pandaid"], name="job_queue_pandaid_idx"),
            # The overview's latest failures (pandamon.queries.users.latest_failures): the failed
            # jobs alone, newest first, not the time index walked past every newer job of other
            # states (248,000 of them, 114 ms, on the 10M-job benchmark).
            models.Index(
                fields=["-statechangetime", "-pandaid"],
                name="job_failed_time_idx",
                condition=Q(jobstatus="failed"),
            ),
            # /dash/ and the overview count active jobs per queue whatever their age
            # (pandamon.queries.dash_matrix); a few per cent of the table, so a small index.
            models.Index(
                fields=["queue", "jobstatus"],
                include=["request_cores"],
                name="job_active_queue_idx",
                condition=Q(jobstatus__in=["defined", "activated", "sent", "starting", "running", "holding"]),
            ),
            # Time windows (/jobs/?hours=N, /errors/); /dash/, /sites/ and the overview count jobs
            # per queue and state in a window (pandamon.queries.dash_matrix, queue_state_counts):
            # covering, so index-only there.
            models.Index(
                fields=["statechangetime"],
                include=["queue", "jobstatus", "request_cores"],
                name="job_window_summary_idx",
            ),
            # /site/<name>/ reads a window's ended jobs of a site's queues index-only from
            # job_ended_stats_idx on (computingsite, statechangetime), created on PostgreSQL by
            # migration 0016 with the generated columns it includes (ended_node, ended_walltime,
            # ended_cpu_per_core, ended_max_rss_kb: the value once the job is finished or failed,
            # NULL before). Outside the model: no heartbeat column may be in an index (a heartbeat
            # must stay a HOT update), and the generated copies do not change while a job runs.
        ]

    def __str__(self) -> str:
        return f"{self.pandaid} {self.name} ({self.jobstatus})"


class JobAttemptColumns(models.Model):
    """The columns of a finished attempt but its job, shared with the archive."""

    # The job's task, copied when the attempt is written (a job never changes task): a task's
    # core-hours and failure budget read its attempts through this column's index instead of
    # joining every attempt to its job. Null only for attempts written before the column existed
    # and not backfilled (dispatcher migration 0017 fills them).
    task = models.ForeignKey(
        Task,
        on_delete=models.DO_NOTHING,
        db_column="jeditaskid",
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    attemptnr = models.PositiveIntegerField()
    jobstatus = models.CharField(max_length=16, choices=JobStatus.choices)
    queue = models.CharField(max_length=64, blank=True, db_column="computingsite")
    node = models.CharField(max_length=128, blank=True)
    pilot_id = models.CharField(max_length=200, blank=True)
    worker_id = models.BigIntegerField(null=True, blank=True)
    request_memory_mb = models.PositiveIntegerField(default=0)
    request_cores = models.PositiveIntegerField(default=1)
    cpu_time_s = models.FloatField(null=True, blank=True)
    max_rss_kb = models.BigIntegerField(null=True, blank=True)
    max_pss_kb = models.BigIntegerField(null=True, blank=True)
    walltime_s = models.FloatField(null=True, blank=True)
    piloterrorcode = models.IntegerField(default=0)
    piloterrordiag = models.CharField(max_length=500, blank=True)
    exeerrorcode = models.IntegerField(default=0)
    exeerrordiag = models.CharField(max_length=500, blank=True)
    transexitcode = models.IntegerField(default=0)
    ddmerrorcode = models.IntegerField(default=0)
    ddmerrordiag = models.CharField(max_length=500, blank=True)
    jobdispatchererrorcode = models.IntegerField(default=0)
    jobdispatchererrordiag = models.CharField(max_length=500, blank=True)
    superrorcode = models.IntegerField(default=0)
    superrordiag = models.CharField(max_length=500, blank=True)
    taskbuffererrorcode = models.IntegerField(default=0)
    taskbuffererrordiag = models.CharField(max_length=500, blank=True)
    retry_action = models.CharField(
        max_length=32, blank=True, help_text="What the retrier decided: retry, boost_memory, no_retry …"
    )
    retry_reason = models.CharField(max_length=300, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    starttime = models.DateTimeField(null=True, blank=True)
    endtime = models.DateTimeField()
    lease = models.CharField(
        max_length=32,
        blank=True,
        help_text="A failed attempt's dispatch lease: a late finished report must echo it.",
    )

    class Meta:
        abstract = True


class JobAttempt(JobAttemptColumns):
    """One finished attempt of a job: its errors, metrics and the retry decision taken."""

    # Indexed by jobattempt_unique (job, attemptnr); a second index would only slow the writes.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts", db_index=False)

    class Meta:
        ordering = ["job", "attemptnr"]
        constraints = [
            models.UniqueConstraint(fields=["job", "attemptnr"], name="jobattempt_unique"),
            models.CheckConstraint(
                condition=Q(jobstatus__in=JobStatus.values), name="jobattempt_status_valid"
            ),
        ]
        indexes = [
            # /errors/ over a time window, and memory learning per label.
            models.Index(fields=["endtime"], name="jobattempt_endtime_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.attemptnr} {self.jobstatus}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The job's task: every ORM write of an attempt passes its job (no read when it is loaded).
        if self.task_id is None and self.job_id is not None:
            self.task_id = self.job.task_id
        super().save(*args, **kwargs)


class JobDependency(models.Model):
    parent = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="child_edges")
    child = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="parent_edges")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "child"], name="jobdependency_unique"),
            models.CheckConstraint(condition=~Q(parent=F("child")), name="jobdependency_no_self_loop"),
        ]
        indexes = [
            # Parents of a job (job page, restart recomputing pending_parents).
            models.Index(fields=["child"], name="jobdependency_child_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.parent_id} -> {self.child_id}"


class FileRole(models.TextChoices):
    INPUT = "input", "input"
    OUTPUT = "output", "output"
    LOG = "log", "log"
    PSEUDO = "pseudo", "pseudo"


class FileColumns(models.Model):
    """The columns of a job's file but its job, shared with the archive."""

    lfn = models.CharField(max_length=400)
    role = models.CharField(max_length=8, choices=FileRole.choices)
    dataset = models.CharField(max_length=300, blank=True)
    scope = models.CharField(max_length=100, blank=True)
    guid = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    checksum = models.CharField(max_length=64, blank=True)
    location = models.CharField(max_length=400, blank=True)
    status = models.CharField(max_length=20, default="defined")

    class Meta:
        abstract = True


class File(FileColumns):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="files")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(role__in=FileRole.values), name="file_role_valid"),
            models.UniqueConstraint(fields=["job", "lfn"], name="file_unique_lfn_per_job"),
        ]
        indexes = [models.Index(fields=["lfn"], name="file_lfn_idx")]

    def __str__(self) -> str:
        return self.lfn


class JobStatusLogColumns(models.Model):
    """The columns of a status change but its job, shared with the archive."""

    attemptnr = models.PositiveIntegerField()
    jobstatus = models.CharField(max_length=16, choices=JobStatus.choices)
    previous = models.CharField(max_length=16, blank=True)
    time = models.DateTimeField()
    cause = models.CharField(max_length=300, blank=True)

    class Meta:
        abstract = True


class JobStatusLog(JobStatusLogColumns):
    """Every transition, with its cause: the job page's state history."""

    # Indexed by jobstatuslog_job_time_idx (job, time).
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="status_log", db_index=False)

    class Meta:
        ordering = ["job", "time", "id"]
        indexes = [models.Index(fields=["job", "time"], name="jobstatuslog_job_time_idx")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.previous}->{self.jobstatus}"


class PayloadLog(models.Model):
    """Payload output streamed by the pilot in chunks, capped per attempt."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="payload_log")
    attemptnr = models.PositiveIntegerField()
    sequence = models.PositiveIntegerField()
    text = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "attemptnr", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["job", "attemptnr", "sequence"], name="payloadlog_unique_chunk")
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.attemptnr}[{self.sequence}]"
