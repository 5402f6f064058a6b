"""Housekeeping writes of the `janitor` loop (`dispatcher.loops.janitor_one_batch`).

Whole final workflows move to the archive tables after AILURO_JOB_ARCHIVE_AFTER_DAYS
(`dispatcher/services/archive.py`, as PanDA's jobsActive4 → jobsArchived4). Until then the functions
here drop what only mattered while a final job ran. Each is bounded by `limit` rows; the next run
continues.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings

from dispatcher.models import Job, JobStatusLog, PayloadLog
from dispatcher.states import JOB_FINAL


def jobs_archive(*, limit: int, now: dt.datetime) -> int:
    """Returns rows changed or deleted.

    1. Final jobs' dispatch lease tokens are cleared (no pilot can ever match them again).
    2. Once a job has been final for ARCHIVE_AFTER_DAYS, its JobStatusLog rows are deleted; the
       JobAttempt rows (errors, metrics, retry decisions: the retry chain) and the job row stay.
    """
    final = list(JOB_FINAL)
    done = 0
    ids = list(Job.objects.filter(jobstatus__in=final).exclude(lease="").values_list("pk", flat=True)[:limit])
    if ids:
        done += Job.objects.filter(pk__in=ids, jobstatus__in=final).update(lease="")
    before = now - dt.timedelta(days=int(settings.AILURO["ARCHIVE_AFTER_DAYS"]))
    old_jobs = Job.objects.filter(jobstatus__in=final, statechangetime__lt=before)
    log_ids = list(JobStatusLog.objects.filter(job__in=old_jobs).values_list("pk", flat=True)[:limit])
    if log_ids:
        done += JobStatusLog.objects.filter(pk__in=log_ids).delete()[0]
    return done


def payload_logs_trim(*, limit: int, now: dt.datetime) -> int:
    """Deletes the payload logs of jobs final for PAYLOAD_LOG_RETENTION_DAYS; returns rows deleted."""
    before = now - dt.timedelta(days=int(settings.AILURO["PAYLOAD_LOG_RETENTION_DAYS"]))
    old_jobs = Job.objects.filter(jobstatus__in=list(JOB_FINAL), statechangetime__lt=before)
    chunk_ids = list(PayloadLog.objects.filter(job__in=old_jobs).values_list("pk", flat=True)[:limit])
    if not chunk_ids:
        return 0
    return PayloadLog.objects.filter(pk__in=chunk_ids).delete()[0]
