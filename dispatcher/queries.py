"""Named reads of the dispatcher, each for its consumer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import Q, QuerySet

from dispatcher.brokerage import SiteRule
from dispatcher.states import QUEUE_LOAD_KINDS, JobStatus

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from dispatcher.models import Queue, Task


_CODE_POINT_COLLATIONS = frozenset({"C", "POSIX", "C.UTF-8", "C.utf8"})
_collation_cache: dict[str, bool] = {}


def collation_orders_by_code_point() -> bool:
    """Whether the database's default collation orders text by code point (C, C.UTF-8), so a
    prefix is exactly a range of a plain btree index. Asked once per process (PostgreSQL)."""
    if connection.vendor != "postgresql":
        return False
    key = connection.settings_dict["NAME"]
    if key not in _collation_cache:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
            _collation_cache[key] = cursor.fetchone()[0] in _CODE_POINT_COLLATIONS
    return _collation_cache[key]


def prefix_q(column: str, prefix: str, *, like_column: str | None = None) -> Q:
    """Rows whose `column` starts with `prefix`, in a form an index on `column` answers: with a
    code-point collation the range [prefix, prefix with its last character incremented), exact
    by itself (PostgreSQL uses a plain btree for LIKE only under the collation "C"); otherwise
    LIKE on `like_column` (default `column`; a foreign key's name lookup goes through the join)."""
    like = Q(**{f"{like_column or column}__startswith": prefix})
    if not prefix or ord(prefix[-1]) >= 0x10FFFF or not collation_orders_by_code_point():
        return like
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return Q(**{f"{column}__gte": prefix, f"{column}__lt": upper})


@dataclass(frozen=True)
class CoreUse:
    """Core-seconds (whole seconds of walltime × requested cores) of a task's ended attempts,
    failed and all, and the same counted from its `budget_since` (what its failure budget sees)."""

    failed_core_s: int
    total_core_s: int
    attempts: int
    failed: int
    budget_failed_core_s: int = 0
    budget_total_core_s: int = 0
    budget_attempts: int = 0
    budget_failed: int = 0

    def since_resume(self) -> CoreUse:
        return CoreUse(
            self.budget_failed_core_s, self.budget_total_core_s, self.budget_attempts, self.budget_failed
        )


def tasks_core_use(task_ids: Sequence[int], *, archived: bool = False) -> dict[int, CoreUse]:
    """Per task, the core-seconds its ended attempts used, failed and all (the failed ones are its
    wasted core-hours), all time and since the task's `budget_since`: one GROUP BY over the tasks'
    attempts (tasks without attempts are missing); `archived`: tasks of an archived workflow, whose
    attempts are in the archive."""
    from django.db.models import Count, F, Q, Sum
    from django.db.models.functions import Coalesce, Round

    from dispatcher.models import ArchivedJobAttempt, JobAttempt

    core = Coalesce(Round(F("walltime_s")), 0.0) * F("request_cores")
    failed = Q(jobstatus=JobStatus.FAILED)
    since = Q(task__budget_since__isnull=True) | Q(endtime__gte=F("task__budget_since"))
    grouped = (
        (ArchivedJobAttempt if archived else JobAttempt)
        ._default_manager.filter(task_id__in=list(task_ids))
        .order_by()
        .values("task_id")
        .annotate(
            total=Sum(core),
            failed_s=Sum(core, filter=failed),
            n=Count("id"),
            n_failed=Count("id", filter=failed),
            b_total=Sum(core, filter=since),
            b_failed_s=Sum(core, filter=since & failed),
            b_n=Count("id", filter=since),
            b_failed=Count("id", filter=since & failed),
        )
    )
    return {
        r["task_id"]: CoreUse(
            int(r["failed_s"] or 0),
            int(r["total"] or 0),
            r["n"],
            r["n_failed"],
            int(r["b_failed_s"] or 0),
            int(r["b_total"] or 0),
            r["b_n"],
            r["b_failed"],
        )
        for r in grouped
    }


def task_state_counts(task_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Exact per-state job counts of the given tasks: folded counts plus unfolded deltas.

    Raw SQL because the two tables must be read in one statement (one snapshot): read separately, a
    fold committing in between would count some deltas twice or not at all.
    """
    result: dict[int, dict[str, int]] = {task_id: {} for task_id in task_ids}
    if not task_ids:
        return result
    placeholders = ", ".join(["%s"] * len(task_ids))
    sql = f"""
        SELECT jeditaskid, jobstatus, SUM(n) FROM (
            SELECT jeditaskid, jobstatus, count AS n FROM dispatcher_taskcount WHERE jeditaskid IN ({placeholders})
            UNION ALL
            SELECT jeditaskid, jobstatus, delta AS n FROM dispatcher_taskcountdelta WHERE jeditaskid IN ({placeholders})
        ) AS c GROUP BY jeditaskid, jobstatus
    """  # noqa: S608  (only placeholders are interpolated)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*task_ids, *task_ids])
        for task_id, status, n in cursor.fetchall():
            if n:
                result[task_id][status] = int(n)
    return result


def queue_loads(queues: Sequence[str]) -> dict[str, dict[str, int]]:
    """Exact per-queue counts of the jobs waiting (`activated`) and in flight (`in_flight`), the
    kinds of `QUEUE_LOAD_KINDS`; a queue with none maps to {}.

    PostgreSQL: folded counts plus unfolded deltas in one statement (one snapshot, as
    `task_state_counts`), ~100 rows whatever the number of jobs. SQLite (the embedded run has no
    triggers to keep them): a count of the job rows.
    """
    result: dict[str, dict[str, int]] = {queue: {} for queue in queues}
    if not queues:
        return result
    counted: list[tuple[str, str, int]] = []
    if connection.vendor == "postgresql":
        sql = """
            SELECT computingsite, kind, SUM(n) FROM (
                SELECT computingsite, kind, count AS n FROM dispatcher_queuecount
                WHERE computingsite = ANY(%s)
                UNION ALL
                SELECT computingsite, kind, delta AS n FROM dispatcher_queuecountdelta
                WHERE computingsite = ANY(%s)
            ) AS c GROUP BY computingsite, kind
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [list(queues), list(queues)])
            counted = cursor.fetchall()
    else:
        from django.db.models import Count

        from dispatcher.models import Job

        for queue, status, n in (
            Job.objects.filter(queue__in=list(queues), jobstatus__in=list(QUEUE_LOAD_KINDS))
            .order_by()
            .values_list("queue_id", "jobstatus")
            .annotate(n=Count("pandaid"))
        ):
            counted.append((queue, QUEUE_LOAD_KINDS[status], n))
    for queue, kind, n in counted:
        if n:
            result[queue][kind] = result[queue].get(kind, 0) + int(n)
    return result


def users_state_counts(tasks: QuerySet[Any]) -> dict[str, tuple[int, dict[str, int]]]:
    """For the tasks `tasks` selects, per user: how many tasks, and their jobs' exact per-state
    counts (folded counts plus unfolded deltas), summed in one statement over the selection as a
    subquery (not materialized: the planner sees its size, and joins the counters by hash for many
    tasks, by index for a few). `task_state_counts` of every task binds each id twice: 230 ms for
    the 13,628 tasks of the 10M-job benchmark."""
    task_sql, task_params = tasks.order_by().values("jeditaskid", "username").query.sql_with_params()
    sql = f"""
        WITH t (jeditaskid, username) AS NOT MATERIALIZED ({task_sql})
        SELECT username, '', COUNT(*) FROM t GROUP BY username
        UNION ALL
        SELECT t.username, c.jobstatus, SUM(c.n) FROM (
            SELECT jeditaskid, jobstatus, count AS n FROM dispatcher_taskcount
            UNION ALL
            SELECT jeditaskid, jobstatus, delta AS n FROM dispatcher_taskcountdelta
        ) AS c JOIN t ON t.jeditaskid = c.jeditaskid
        GROUP BY t.username, c.jobstatus
    """  # noqa: S608  (the ORM's compiled selection and constant names only)
    per_user: dict[str, int] = {}
    counts: dict[str, dict[str, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, list(task_params))
        for username, status, n in cursor.fetchall():
            if status == "":
                per_user[username] = int(n)
            elif n:
                counts.setdefault(username, {})[status] = int(n)
    return {username: (n, counts.get(username, {})) for username, n in per_user.items()}


def workflow_state_counts(workflow_id: int) -> dict[str, int]:
    """Exact per-state job counts of a workflow, summed over its tasks."""
    from dispatcher.models import Task

    task_ids = list(Task.objects.filter(workflow_id=workflow_id).values_list("jeditaskid", flat=True))
    totals: dict[str, int] = defaultdict(int)
    for counts in task_state_counts(task_ids).values():
        for status, n in counts.items():
            totals[status] += n
    return {status: totals[status] for status in JobStatus.values if totals.get(status)}


def workflows_state_counts(workflow_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Exact per-state job counts of several workflows (API lists): two queries for any number."""
    from dispatcher.models import Task

    rows = list(
        Task.objects.filter(workflow_id__in=list(workflow_ids)).values_list("jeditaskid", "workflow_id")
    )
    counts = task_state_counts([task_id for task_id, _ in rows])
    result: dict[int, dict[str, int]] = {wf: {} for wf in workflow_ids}
    for task_id, workflow_id in rows:
        for state, n in counts[task_id].items():
            result[workflow_id][state] = result[workflow_id].get(state, 0) + n
    return result


def workflow_label_report(workflow_id: int) -> list[dict[str, Any]]:
    """Per label, in task order (the chunks of a label summed): its tasks, total and a count for
    every job state — the rows of `bps report` / `ailuro report`."""
    from dispatcher.models import Task

    tasks = list(
        Task.objects.filter(workflow_id=workflow_id).order_by("jeditaskid").values("jeditaskid", "label")
    )
    counts = task_state_counts([t["jeditaskid"] for t in tasks])
    rows: dict[str, dict[str, Any]] = {}
    for task in tasks:
        row = rows.setdefault(
            task["label"],
            {"label": task["label"], "jeditaskids": [], "total": 0, **dict.fromkeys(JobStatus.values, 0)},
        )
        row["jeditaskids"].append(task["jeditaskid"])
        for state, n in counts[task["jeditaskid"]].items():
            row[state] += n
            row["total"] += n
    return list(rows.values())


def queue_exists(name: str) -> bool:
    """Pilot protocol: tells "no jobs" apart from "no such queue" (only on the no-job path)."""
    from dispatcher.models import Queue

    return Queue.objects.filter(name=name).exists()


def jobs_status_for_pilot(
    pandaids: Sequence[int], *, queues: frozenset[str] | None
) -> dict[int, tuple[str, int]]:
    """getStatus / get_job_status: pandaid → (status, attemptnr), limited to the pilot's queues."""
    from dispatcher.models import Job

    rows = Job.objects.filter(pandaid__in=list(pandaids))
    if queues is not None:
        rows = rows.filter(queue_id__in=sorted(queues))
    return {
        pandaid: (status, attempt)
        for pandaid, status, attempt in rows.values_list("pandaid", "jobstatus", "attemptnr")
    }


def queue_for_pilot(name: str) -> Queue | None:
    """The queue record served as schedconfig (/cache/schedconfig/<queue>.json)."""
    from dispatcher.models import Queue

    return Queue.objects.select_related("site").filter(name=name).first()


def job_descendants(parents: Sequence[int], *, jobstatus: str | None = None) -> list[int]:
    """Every job reachable from `parents` along dependency edges, in pandaid order; with
    `jobstatus`, only through (and only returning) jobs in that state.

    Raw SQL: a recursive CTE walks the whole sub-DAG in one statement instead of one query per
    level; the same text runs on PostgreSQL and SQLite. Parents go in batches of 5,000 placeholders.
    """
    state_join = "JOIN dispatcher_job j ON j.pandaid = d.child_id AND j.jobstatus = %s" if jobstatus else ""
    found: set[int] = set()
    for start in range(0, len(parents), 5000):
        batch = list(parents[start : start + 5000])
        placeholders = ", ".join(["%s"] * len(batch))
        sql = f"""
            WITH RECURSIVE below(pandaid) AS (
                SELECT d.child_id FROM dispatcher_jobdependency d {state_join}
                WHERE d.parent_id IN ({placeholders})
                UNION
                SELECT d.child_id FROM dispatcher_jobdependency d
                JOIN below b ON d.parent_id = b.pandaid {state_join}
            )
            SELECT pandaid FROM below
        """  # noqa: S608  (only placeholders and our own fixed fragments are interpolated)
        params: list[int | str] = [jobstatus] if jobstatus else []
        params += batch
        if jobstatus:
            params.append(jobstatus)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            found.update(row[0] for row in cursor.fetchall())
    return sorted(found)


def task_site_rules(tasks: QuerySet[Task]) -> list[tuple[int, str, SiteRule]]:
    """(jeditaskid, label, rule) of those of `tasks` that have site constraints; brokerage and
    set-memory read them, one query."""
    return [
        (tid, label, SiteRule.of(include, exclude))
        for tid, label, include, exclude in tasks.values_list(
            "jeditaskid", "label", "included_sites", "excluded_sites"
        )
        if include or exclude
    ]


def job_change_oldest() -> datetime | None:
    """The state-change time of the oldest unfolded entering job change (`JobChange`, delta +1),
    None when there is none: the lag of the monitor's fold.

    The feed has no insertion time; an entering change carries its job's new state-change time,
    which a transition sets to the moment it writes. One read from the start of the primary key,
    which stops at the first entering change (nearly always the first or second row).
    """
    from dispatcher.models import JobChange

    return (
        JobChange.objects.filter(delta__gt=0).order_by("id").values_list("statechangetime", flat=True).first()
    )


# --- the job archive (dispatcher/services/archive.py) ---------------------------------------------


def archive_horizon() -> datetime | None:
    """The latest state-change time of an archived job, None when the archive is empty: a read whose
    time window starts after it never needs the archive. One index read per partition
    (jobarchive_time_idx)."""
    from django.db.models import Max

    from dispatcher.models import ArchivedJob

    horizon: datetime | None = ArchivedJob.objects.aggregate(m=Max("statechangetime"))["m"]
    return horizon


def archive_reached(since: datetime | None, *, horizon: datetime | None = None) -> bool:
    """Whether a read of the jobs changed from `since` on (None: all time) must consult the archive."""
    horizon = archive_horizon() if horizon is None else horizon
    return horizon is not None and (since is None or since <= horizon)


def jobs_with_archive_sql() -> str:
    """A FROM item with the live and the archived jobs under the job table's column names (the
    archive's own key left out), for the reads whose window reaches the archive."""
    from dispatcher.models import Job

    cols = ", ".join(str(f.column) for f in Job._meta.concrete_fields)
    return f"(SELECT {cols} FROM dispatcher_job UNION ALL SELECT {cols} FROM dispatcher_archivedjob)"  # noqa: S608


def attempts_with_archive_sql() -> str:
    """The same for the attempts: the live and the archived ones under the attempt table's names."""
    from dispatcher.models import JobAttempt

    cols = ", ".join(str(f.column) for f in JobAttempt._meta.concrete_fields)
    return f"(SELECT {cols} FROM dispatcher_jobattempt UNION ALL SELECT {cols} FROM dispatcher_archivedjobattempt)"  # noqa: S608
