"""The job archive move and its retention (the `janitor` loop; docs/decisions/0012-job-archive.md).

Whole final workflows — ended (`ended_at`) before the cut-off and every job in a final state — move
their jobs, attempts, status log, files and edges from the live tables into the archive tables
(`dispatcher.models.archive`), one transaction per batch of workflows: on PostgreSQL one
`WITH moved AS (DELETE … RETURNING …) INSERT INTO …archive … SELECT` per table, so a row leaves the
live table exactly when it enters the archive; on SQLite an INSERT … SELECT then a DELETE. Payload
logs are deleted (their own retention is shorter). The workflow is marked `archived_at`, which makes
it read-only (`workflow_actions._workflow_lock` answers 409); workflows and tasks themselves stay.

The move takes row locks only (ROW EXCLUSIVE on the live tables, as any DELETE): pilots and other
writers are never blocked on a table. It is no change of any job's state: its transaction sets
`ailuro.archiving` (`changefeed.archive_move`), so the delete triggers append nothing to the change
feed, and no per-task count moves; the monitor's counts stay exactly what they were.
"""

# ruff: noqa: S608  (SQL built from the models' constant column lists; values are parameters)
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef

from dispatcher.changefeed import archive_move
from dispatcher.models import (
    ArchivedFile,
    ArchivedJob,
    ArchivedJobAttempt,
    ArchivedJobDependency,
    ArchivedJobStatusLog,
    File,
    Job,
    JobAttempt,
    JobDependency,
    JobStatusLog,
    PayloadLog,
    Workflow,
)
from dispatcher.states import JOB_NON_FINAL, WORKFLOW_FINAL

# Live model → its archive, in move order (what hangs off a job first, the job last), with the
# column that leads to the job (None: the job table itself).
ARCHIVED: tuple[tuple[type[models.Model], type[models.Model], str | None], ...] = (
    (JobDependency, ArchivedJobDependency, "child_id"),
    (File, ArchivedFile, "job_id"),
    (JobStatusLog, ArchivedJobStatusLog, "job_id"),
    (JobAttempt, ArchivedJobAttempt, "job_id"),
    (Job, ArchivedJob, None),
)
PARTITION_KEY = "workflow_ended_at"


def columns(model: type[models.Model]) -> list[str]:
    return [str(f.column) for f in model._meta.concrete_fields]


def _check_columns() -> None:
    """The archive has every live column and the partition key, nothing else (the abstract bases
    make it so; this guards a field added to one concrete class only)."""
    for live, archive, _ in ARCHIVED:
        if sorted([*columns(live), PARTITION_KEY]) != sorted(columns(archive)):
            raise RuntimeError(f"{archive._meta.db_table} does not have the columns of {live._meta.db_table}")


_check_columns()


@dataclass
class ArchiveResult:
    workflows: int = 0
    jobs: int = 0
    partitions_dropped: int = 0


def archive_cutoff(now: dt.datetime) -> dt.datetime | None:
    """Workflows ended before this move to the archive; None when archiving is off."""
    days = int(settings.AILURO["JOB_ARCHIVE_AFTER_DAYS"])
    return now - dt.timedelta(days=days) if days > 0 else None


def workflows_archivable(*, before: dt.datetime, limit: int) -> list[int]:
    """Up to `limit` ended workflows, oldest end first, ended before `before`, not archived, every
    job in a final state."""
    unended = Job.objects.filter(workflow_id=OuterRef("pk"), jobstatus__in=list(JOB_NON_FINAL))
    return list(
        Workflow.objects.filter(
            archived_at__isnull=True, ended_at__lt=before, status__in=list(WORKFLOW_FINAL)
        )
        .exclude(Exists(unended))
        .order_by("ended_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def _month(t: dt.datetime) -> dt.date:
    t = t.astimezone(dt.UTC)
    return dt.date(t.year, t.month, 1)


def _next_month(d: dt.date) -> dt.date:
    return dt.date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _partition_name(table: str, month: dt.date) -> str:
    return f"{table}_p{month:%Y%m}"


def partitions_create(months: set[dt.date]) -> None:
    """PostgreSQL: the month partitions of every archive table the move needs (idempotent). Its own
    short transaction: it locks the archive tables, never the live ones."""
    if connection.vendor != "postgresql" or not months:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        for _, archive, _ in ARCHIVED:
            table = archive._meta.db_table
            for month in sorted(months):
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition_name(table, month)} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
                    f"TO ('{_next_month(month).isoformat()} 00:00:00+00')"
                )


def _move_sql(live: type[models.Model], archive: type[models.Model], via: str | None) -> tuple[str, ...]:
    """The statements moving one table's rows of the workflows in %(ids)s (ended at %(ends)s)."""
    table, target = live._meta.db_table, archive._meta.db_table
    cols = columns(live)
    names = ", ".join(cols)
    workflow = "t.workflow_id" if via is None else "j.workflow_id"
    join = "" if via is None else f" JOIN dispatcher_job j ON j.pandaid = t.{via}"
    if connection.vendor == "postgresql":
        using = "" if via is None else f" USING dispatcher_job j WHERE j.pandaid = t.{via} AND"
        where = " WHERE" if via is None else ""
        picked = ", ".join(f"t.{c}" for c in cols)
        return (
            f"WITH w AS (SELECT * FROM unnest(%(ids)s::bigint[], %(ends)s::timestamptz[]) AS w(id, ended_at)), "
            f"moved AS (DELETE FROM {table} t{using}{where} {workflow} = ANY(%(ids)s) "
            f"RETURNING {picked}, {workflow} AS archive_workflow_id) "
            f"INSERT INTO {target} ({names}, {PARTITION_KEY}) "
            f"SELECT {', '.join(f'm.{c}' for c in cols)}, w.ended_at FROM moved m "
            f"JOIN w ON w.id = m.archive_workflow_id",
        )
    picked = ", ".join(f"t.{c}" for c in cols)
    return (
        f"INSERT INTO {target} ({names}, {PARTITION_KEY}) SELECT {picked}, wf.ended_at FROM {table} t{join} "
        f"JOIN dispatcher_workflow wf ON wf.id = {workflow} WHERE {workflow} IN %(in)s",
        f"DELETE FROM {table} WHERE "
        + (
            "workflow_id IN %(in)s"
            if via is None
            else f"{via} IN (SELECT pandaid FROM dispatcher_job WHERE workflow_id IN %(in)s)"
        ),
    )


def workflows_archive(workflow_ids: list[int], *, now: dt.datetime) -> tuple[int, int]:
    """Moves the jobs of these workflows to the archive in one transaction; returns (workflows,
    jobs) moved. Each workflow is locked and checked again (ended, every job final, not archived)."""
    if not workflow_ids:
        return 0, 0
    ends = dict(Workflow.objects.filter(pk__in=workflow_ids).values_list("pk", "ended_at"))
    partitions_create({_month(t) for t in ends.values() if t is not None})
    with transaction.atomic():
        unended = Job.objects.filter(workflow_id=OuterRef("pk"), jobstatus__in=list(JOB_NON_FINAL))
        locked = list(
            Workflow.objects.select_for_update()
            .filter(pk__in=workflow_ids, archived_at__isnull=True, ended_at__isnull=False)
            .exclude(Exists(unended))
            .order_by("pk")
            .values_list("pk", "ended_at")
        )
        if not locked:
            return 0, 0
        ids = [pk for pk, _ in locked]
        missing = {_month(t) for _, t in locked if t is not None} - {
            _month(t) for t in ends.values() if t is not None
        }
        if missing:  # an end changed since it was read: a restart and a new end in between
            return 0, 0
        jobs = 0
        with archive_move(), connection.cursor() as cursor:
            PayloadLog.objects.filter(job__workflow_id__in=ids).delete()
            for live, archive, via in ARCHIVED:
                for statement in _move_sql(live, archive, via):
                    if connection.vendor == "postgresql":
                        cursor.execute(statement, {"ids": ids, "ends": [t for _, t in locked]})
                    else:
                        cursor.execute(statement.replace("%(in)s", f"({', '.join(['%s'] * len(ids))})"), ids)
                    if live is Job and statement.lstrip().startswith(("WITH", "INSERT")):
                        jobs = cursor.rowcount
        Workflow.objects.filter(pk__in=ids).update(archived_at=now)
    return len(ids), jobs


def jobs_archive_move(
    *, now: dt.datetime, max_jobs: int | None = None, workflows_per_batch: int = 100
) -> ArchiveResult:
    """Moves archivable workflows, `workflows_per_batch` per transaction, until about `max_jobs`
    jobs moved (JOB_ARCHIVE_BATCH_JOBS) or none is left; nothing when archiving is off."""
    result = ArchiveResult()
    before = archive_cutoff(now)
    if before is None:
        return result
    budget = int(settings.AILURO["JOB_ARCHIVE_BATCH_JOBS"]) if max_jobs is None else max_jobs
    skipped: set[int] = set()
    while result.jobs < budget:
        candidates = [
            pk
            for pk in workflows_archivable(before=before, limit=workflows_per_batch + len(skipped))
            if pk not in skipped
        ][:workflows_per_batch]
        if not candidates:
            break
        workflows, jobs = workflows_archive(candidates, now=now)
        if workflows < len(candidates):
            skipped.update(candidates)  # raced with an action: the next run looks again
        result.workflows += workflows
        result.jobs += jobs
    return result


def archive_partitions_drop(*, now: dt.datetime) -> int:
    """Drops the archived rows of workflows ended more than JOB_ARCHIVE_RETENTION_DAYS ago: on
    PostgreSQL whole month partitions whose month ended before that (a DROP TABLE of the partition,
    locking the archive, never a live table); on SQLite a DELETE. Returns partitions (PostgreSQL) or
    jobs (SQLite) dropped; nothing when the retention is 0 (keep forever)."""
    days = int(settings.AILURO["JOB_ARCHIVE_RETENTION_DAYS"])
    if days <= 0:
        return 0
    before = now - dt.timedelta(days=days)
    if connection.vendor != "postgresql":
        dropped = 0
        for _, archive, _ in ARCHIVED:
            n = archive._default_manager.filter(**{f"{PARTITION_KEY}__lt": before}).delete()[0]
            dropped = n if archive is ArchivedJob else dropped
        return dropped
    dropped = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for _, archive, _ in ARCHIVED:
            table = archive._meta.db_table
            cursor.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
                [table],
            )
            for (name,) in cursor.fetchall():
                suffix = name.removeprefix(f"{table}_p")
                if len(suffix) != 6 or not suffix.isdigit():
                    continue
                month = dt.date(int(suffix[:4]), int(suffix[4:]), 1)
                if dt.datetime.combine(_next_month(month), dt.time(), tzinfo=dt.UTC) <= before:
                    cursor.execute(f'DROP TABLE "{name}"')
                    dropped += archive is ArchivedJob
    return dropped


def archive_step(*, now: dt.datetime) -> int:
    """The janitor's archive part: the move, then the retention; returns jobs moved plus
    partitions dropped."""
    moved = jobs_archive_move(now=now)
    return moved.jobs + archive_partitions_drop(now=now)
