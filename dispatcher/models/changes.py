"""The change feed: what changed in the job and attempt tables, appended in the writer's own
transaction (docs/architecture.md, "The change feed and the monitor"; decision 0006).

PostgreSQL only. Triggers on `dispatcher_job` and `dispatcher_jobattempt` append the rows, and the
set-based transitions append those of their own UPDATE (`dispatcher/changefeed.py`). On SQLite (the
embedded run) the tables exist and stay empty. Rows are only ever appended here; the reader (the
monitor's fold) deletes what it has consumed. No foreign keys: appending a change must never make a
transition wait on another table's lock, and deleting a job must not cascade into its changes.
"""

from __future__ import annotations

from django.db import models


class JobChange(models.Model):
    """A job's tuple of summarised columns entering (+1) or leaving (−1): an insert adds +new, a
    delete −old, an update that changes the tuple −old and +new. Only tuples with a state-change time.

    The raw columns (`dispatcher.changefeed.JOB_CHANGE_COLUMNS`), so appending is one INSERT;
    `computingsite` is '' for a job without a queue, so every column is NOT NULL.
    """

    id = models.BigAutoField(primary_key=True)
    statechangetime = models.DateTimeField()
    jobstatus = models.CharField(max_length=16)
    computingsite = models.CharField(max_length=64)
    produsername = models.CharField(max_length=150)
    label = models.CharField(max_length=100)
    jeditaskid = models.BigIntegerField()
    workflow_id = models.BigIntegerField()
    attemptnr = models.IntegerField()
    resource_type = models.CharField(max_length=32)
    prodsourcelabel = models.CharField(max_length=20)
    piloterrorcode = models.IntegerField()
    exeerrorcode = models.IntegerField()
    ddmerrorcode = models.IntegerField()
    transexitcode = models.IntegerField()
    delta = models.SmallIntegerField()

    def __str__(self) -> str:
        return f"{self.delta:+d} {self.jobstatus} @ {self.statechangetime}"


class FailedAttemptChange(models.Model):
    """A failed attempt entering (+1) or leaving (−1), with its raw error codes and diags and its
    job's task and user as of the attempt. Attempts in other states are not recorded."""

    id = models.BigAutoField(primary_key=True)
    endtime = models.DateTimeField()
    job_id = models.BigIntegerField()
    jeditaskid = models.BigIntegerField()
    produsername = models.CharField(max_length=150)
    computingsite = models.CharField(max_length=64)
    piloterrorcode = models.IntegerField()
    piloterrordiag = models.CharField(max_length=500)
    exeerrorcode = models.IntegerField()
    exeerrordiag = models.CharField(max_length=500)
    transexitcode = models.IntegerField()
    ddmerrorcode = models.IntegerField()
    ddmerrordiag = models.CharField(max_length=500)
    jobdispatchererrorcode = models.IntegerField()
    jobdispatchererrordiag = models.CharField(max_length=500)
    superrorcode = models.IntegerField()
    superrordiag = models.CharField(max_length=500)
    taskbuffererrorcode = models.IntegerField()
    taskbuffererrordiag = models.CharField(max_length=500)
    # The attempt's cost: whole seconds of walltime × requested cores (integers add up exactly).
    core_s = models.BigIntegerField(default=0, db_default=0)
    delta = models.SmallIntegerField()

    def __str__(self) -> str:
        return f"{self.delta:+d} failed attempt of {self.job_id} @ {self.endtime}"
