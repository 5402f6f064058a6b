"""Monitor rollups (decision 0003): exact counts per hour that the wide-window pages read instead of
scanning every job or failed attempt of the window. PostgreSQL only: on SQLite (the embedded mode)
the tables exist but stay empty and the pages scan, as before.

Writers never touch these tables. The engine records what changed in its job and attempt tables
(the change feed, `dispatcher.models.JobChange` and `FailedAttemptChange`, decision 0006); the
"monitor" loop folds those rows into the summaries (`pandamon.rollups.rollups_fold`). No foreign
keys: deleting a job must not cascade into counts.
"""

from __future__ import annotations

from django.db import models


class JobSummary(models.Model):
    """Jobs per (hour of statechangetime, jobstatus, facet, value): the /jobs/ facets, its chart
    and /dash/. One row per facet value, so a window's facets are one GROUP BY over a few thousand
    rows per hour instead of the window's jobs."""

    id = models.BigAutoField(primary_key=True)
    bucket = models.DateTimeField()
    jobstatus = models.CharField(max_length=16)
    facet = models.CharField(max_length=16)
    value = models.CharField(max_length=250)
    count = models.BigIntegerField()

    class Meta:
        constraints = [
            # The fold's ON CONFLICT target; bucket first, so a window is a range of this index.
            models.UniqueConstraint(fields=["bucket", "jobstatus", "facet", "value"], name="jobsummary_key"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket} {self.jobstatus} {self.facet}={self.value}: {self.count}"


class _FilterSummaryRow(models.Model):
    """The columns of the filter summary's rows, per hour and per day: jobs per (bucket, jobstatus,
    filter dimension and its value, facet, value)."""

    id = models.BigAutoField(primary_key=True)
    bucket = models.DateTimeField()
    jobstatus = models.CharField(max_length=16)
    dim = models.CharField(max_length=16)
    dimvalue = models.CharField(max_length=250)
    facet = models.CharField(max_length=16)
    value = models.CharField(max_length=250)
    count = models.BigIntegerField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.bucket} {self.dim}={self.dimvalue} {self.jobstatus} {self.facet}={self.value}: {self.count}"


class JobFilterSummary(_FilterSummaryRow):
    """Jobs per (hour of statechangetime, jobstatus, filter dimension and its value, facet, value):
    the /jobs/ facets and chart under one filter a shifter sets (a queue, and through it a site or
    a region; a user; a label; a task), decision 0013, and under two of them together (a queue with
    a label or a user, decision 0016). `dim` names the filter's facet (`rollup_sql.FILTER_DIMENSIONS`)
    or pair (`rollup_sql.FILTER_PAIRS`), `dimvalue` its value as the summary's text (NULL queue → '';
    a pair's two values as `rollup_sql.pair_value`).
    Within one (bucket, jobstatus, dim, facet) the rows partition the jobs by `dimvalue`, so a
    value, a set of values, a wildcard or a negation is a sum over rows of this table."""

    class Meta:
        constraints = [
            # The fold's ON CONFLICT target.
            models.UniqueConstraint(
                fields=["bucket", "jobstatus", "dim", "dimvalue", "facet", "value"],
                name="jobfiltersummary_key",
            ),
        ]
        indexes = [
            # A filter's rows in a window: one dimension value (or a prefix) over a range of hours.
            models.Index(fields=["dim", "dimvalue", "bucket"], name="jobfiltersummary_dim_idx"),
            # The chart's rows alone (the state facet, per hour) for the whole days of a window whose
            # other facets come from `JobFilterDaySummary`: a thirteenth of the rows.
            models.Index(
                fields=["dim", "dimvalue", "bucket"],
                condition=models.Q(facet="jobstatus"),
                name="jobfiltersummary_chart_idx",
            ),
        ]


class JobFilterDaySummary(_FilterSummaryRow):
    """`JobFilterSummary` per UTC day instead of per hour, every facet but the state (whose rows the
    chart reads per hour): the whole days of a window of several days read a day's rows once
    instead of 24 hours of them (decision 0019). Folded from the same change rows in the same
    statement, so the day's row is always the sum of its hours'."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "jobstatus", "dim", "dimvalue", "facet", "value"],
                name="jobfilterdaysummary_key",
            ),
        ]
        indexes = [
            models.Index(fields=["dim", "dimvalue", "bucket"], name="jobfilterdaysummary_dim_idx"),
        ]


class ErrorSummary(models.Model):
    """Failed attempts per (hour of endtime, family, code, message template, task), with the
    newest and oldest sample pandaid and the smallest raw diag as the example (what the scan's
    MAX/MIN give): the /errors/ groups and chart, and a task's top errors."""

    id = models.BigAutoField(primary_key=True)
    bucket = models.DateTimeField()
    family = models.CharField(max_length=16)
    code = models.IntegerField()
    template = models.CharField(max_length=500)
    jeditaskid = models.BigIntegerField()
    count = models.BigIntegerField()
    # Walltime × cores of those attempts, in core-seconds (`FailedAttemptChange.core_s`).
    core_s = models.BigIntegerField(default=0, db_default=0)
    newest = models.BigIntegerField(null=True)
    oldest = models.BigIntegerField(null=True)
    # NULL until a positive delta brings a sample (a row folded from deletions only).
    example = models.CharField(max_length=500, null=True)  # noqa: DJ001

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "family", "code", "template", "jeditaskid"], name="errorsummary_key"
            ),
        ]
        indexes = [
            # A task's top errors (/task/<id>/), whatever the age of its attempts.
            models.Index(fields=["jeditaskid"], name="errorsummary_task_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket} {self.family}:{self.code} {self.template}: {self.count}"


class ErrorSplitSummary(models.Model):
    """Failed attempts per (hour of endtime, dimension, value) for the dimensions of
    `rollup_sql.ERROR_SPLIT_DIMS`: one row per queue ('site'), task and user of the hour, each
    attempt counted once in each dimension whatever its number of error families. The /errors/
    split by site, task (and so workflow) and user; its total is the sum over one dimension.
    A row per dimension value, not per combination: a week's split reads ~20,000 rows at 1M jobs a
    day where the combinations were ~300,000."""

    id = models.BigAutoField(primary_key=True)
    bucket = models.DateTimeField()
    dim = models.CharField(max_length=8)
    value = models.CharField(max_length=150)
    count = models.BigIntegerField()
    core_s = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "dim", "value"], name="errorsplitsummary_key"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket} {self.dim} {self.value}: {self.count}"
