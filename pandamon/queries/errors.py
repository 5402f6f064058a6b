"""Named reads of `/errors/` and a task's top errors: failed attempts grouped by family:code →
message template → sample jobs, over time, and split by site, task and user.

On PostgreSQL every such read is one statement of the rollup read (`rollups.error_rows`, decision
0003): the error summaries plus the live edges for a window without filter, the summaries of one
task for its top errors, or the selected attempts scanned live for any other selection (templates
masked in SQL with `sql.template_expression`). On SQLite (the embedded run) two ORM GROUP BYs: the
attempts by their error columns and time bucket, unpivoted and masked in Python
(`errortext.message_template`, the pattern PostgreSQL runs), and by (site, task, user).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, TypeVar

from django.db.models import Count, F, Max, Min, Q, Sum
from django.db.models.functions import Coalesce, Round

from dispatcher.models import ArchivedJobAttempt, JobAttempt
from dispatcher.states import JobStatus
from pandamon import rollups
from pandamon.errortext import message_template
from pandamon.queries.common import bucket_time, utc_bucket_text, with_archive
from pandamon.rollup_sql import ERROR_FAMILIES

# Error family → (code column, diag column or None), as the attempts and jobs store them: the
# engine's list (dispatcher.retry.FAMILY_COLUMNS), through the rollup SQL that uses it too.
_FAMILIES = ERROR_FAMILIES
_V = TypeVar("_V")
_ERROR_COLUMNS = [c for _, code, diag in _FAMILIES for c in (code, diag) if c]
# A failed attempt's cost in core-seconds, as the change feed records it (whole seconds × cores).
_CORE_S = Coalesce(Round(F("walltime_s")), 0.0) * F("request_cores")


@dataclass
class ErrorSummary:
    groups: list[dict[str, Any]]
    over_time: list[tuple[datetime, str, int]]
    by_site: list[tuple[str, int]]
    by_task: list[tuple[int, int]]
    by_user: list[tuple[str, int]]
    total_attempts: int
    # Wasted core-hours: walltime × cores of the failed attempts, in core-seconds (integers, so
    # every total is exactly the sum of its rows): in total, and per split value.
    total_core_s: int = 0
    core_by_site: dict[str, int] = field(default_factory=dict)
    core_by_task: dict[int, int] = field(default_factory=dict)
    core_by_user: dict[str, int] = field(default_factory=dict)
    # (workflow id, failed attempts, core-seconds), from the task split.
    by_workflow: list[tuple[int, int, int]] = field(default_factory=list)


def error_rollup_window(
    since: datetime | None, until: datetime | None, applied: dict[str, str]
) -> rollups.Window | None:
    """The rollup form of an /errors/ selection: a window and no filter (PostgreSQL only)."""
    if not rollups.enabled() or since is None or applied:
        return None
    return rollups.Window.of(since, until)


def errors_summary(
    q: Q, *, unit: str, split: bool = True, rollup: rollups.Window | None = None, archive: bool = False
) -> ErrorSummary:
    """The failed attempts selected by `q` (on the attempts) grouped by family:code → message
    template → sample jobs, failures over time by family:code, and with `split` the split by site,
    task and user (one count per attempt). `total_attempts` counts each failed attempt once, in
    both modes: an attempt with codes in several families is in one group of each, and one
    without any code in none.

    `rollup` is the same selection in rollup form (`error_rollup_window`). Without it, PostgreSQL
    scans the selection in the same statement and SQLite counts it with the ORM; both read the
    archived attempts too with `archive` (the window reaches the archive: `archive_reached`).
    """
    if not rollups.enabled():
        return _errors_summary_orm(q, unit=unit, split=split, archive=archive)
    if rollup is not None:
        rows = rollups.error_rows(rollup, unit=unit, split=split)
    else:
        fields = ("job_id", "jobstatus", "endtime", "queue", "walltime_s", "request_cores", *_ERROR_COLUMNS)
        live: rollups.LiveSelection = JobAttempt.objects.filter(q, jobstatus=JobStatus.FAILED).only(*fields)
        if archive:
            live = with_archive(JobAttempt, ArchivedJobAttempt, q & Q(jobstatus=JobStatus.FAILED), fields)
        rows = rollups.error_rows(None, unit=unit, split=split, live=live, archive=archive)
    return _errors_from_rows(rows, split=split)


def task_error_groups(jeditaskid: int, *, archived: bool = False) -> list[dict[str, Any]]:
    """The failed attempts of one task by family:code → template, largest first: on PostgreSQL
    from the error summaries restricted to the task (errorsummary_task_idx: a few rows whatever
    the task's size) plus its unfolded deltas; on SQLite counted from its attempts."""
    if not rollups.enabled():
        summary = _errors_summary_orm(Q(job__task_id=jeditaskid), unit="day", split=False, archive=archived)
        return summary.groups
    rows = rollups.error_rows(None, unit="day", split=False, jeditaskid=jeditaskid, count_attempts=False)
    return _errors_from_rows(rows, split=False).groups


def _errors_summary_orm(q: Q, *, unit: str, split: bool, archive: bool = False) -> ErrorSummary:
    """The same summary from two ORM GROUP BYs (one without `split`):

    1. failed attempts per (every code and diag column, UTC time bucket), with their count and
       newest/oldest pandaid;
    2. each row unpivoted into its non-zero families, the diag masked into its template in Python;
       counts add up, newest/oldest/example are the max/min of the parts;
    3. with `split`, attempts per (site, task, user), added up per marginal.
    """
    faileds = [
        model._default_manager.filter(q, jobstatus=JobStatus.FAILED).order_by()
        for model in ((JobAttempt, ArchivedJobAttempt) if archive else (JobAttempt,))
    ]
    rows = chain.from_iterable(
        failed.values(*_ERROR_COLUMNS, bucket=utc_bucket_text("endtime", unit)).annotate(
            n=Count("*"), c=Sum(_CORE_S), newest=Max("job"), oldest=Min("job")
        )
        for failed in faileds
    )
    templates: dict[str, str] = {}
    merged: dict[tuple[str, int, str], list[Any]] = {}
    over_time: Counter[tuple[datetime, str]] = Counter()
    attempts = core_total = 0  # each attempt is in one row, whatever families it has codes in
    for row in rows:
        n = row["n"]
        c = int(row["c"] or 0)
        attempts += n
        core_total += c
        for family, code_column, diag_column in _FAMILIES:
            code = row[code_column]
            if code == 0:
                continue
            diag = row[diag_column] if diag_column else ""
            template = templates.get(diag)
            if template is None:
                template = templates[diag] = message_template(diag)
            part = merged.get((family, code, template))
            if part is None:
                merged[family, code, template] = [n, row["newest"], row["oldest"], diag, c]
            else:
                part[0] += n
                part[4] += c
                part[1] = max(part[1], row["newest"])
                part[2] = min(part[2], row["oldest"])
                part[3] = min(part[3], diag)
            over_time[bucket_time(row["bucket"]), f"{family}:{code}"] += n
    groups = [_error_group(*key, *part) for key, part in merged.items()]
    groups.sort(key=lambda g: (-g["count"], g["key"], g["template"]))
    over = sorted((bucket, key, n) for (bucket, key), n in over_time.items())
    if not split:
        return ErrorSummary(groups, over, [], [], [], attempts, total_core_s=core_total)
    by_site: Counter[str] = Counter()
    by_task: Counter[int] = Counter()
    by_user: Counter[str] = Counter()
    core_site: Counter[str] = Counter()
    core_task: Counter[int] = Counter()
    core_user: Counter[str] = Counter()
    by_wf: Counter[int] = Counter()
    core_wf: Counter[int] = Counter()
    split_rows = chain.from_iterable(
        failed.values(
            s_site=F("queue"),
            s_task=F("job__task_id"),
            s_user=F("job__produsername"),
            s_wf=F("job__workflow_id"),
        ).annotate(n=Count("*"), c=Sum(_CORE_S))
        for failed in faileds
    )
    for row in split_rows:
        by_wf[row["s_wf"]] += row["n"]
        by_site[row["s_site"]] += row["n"]
        by_task[row["s_task"]] += row["n"]
        by_user[row["s_user"]] += row["n"]
        c = int(row["c"] or 0)
        core_site[row["s_site"]] += c
        core_task[row["s_task"]] += c
        core_user[row["s_user"]] += c
        core_wf[row["s_wf"]] += c
    return ErrorSummary(
        groups=groups,
        over_time=over,
        by_site=_largest_first(by_site),
        by_task=_largest_first(by_task),
        by_user=_largest_first(by_user),
        total_attempts=sum(by_site.values()),
        total_core_s=sum(core_site.values()),
        core_by_site=dict(core_site),
        core_by_task=dict(core_task),
        core_by_user=dict(core_user),
        by_workflow=_by_workflow((wf, n, core_wf[wf]) for wf, n in by_wf.items()),
    )


def _by_workflow(rows: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(workflow, failed attempts, core-seconds), most wasted core-hours first."""
    return sorted(rows, key=lambda r: (-r[2], -r[1], r[0]))


def _largest_first(counts: Counter[_V]) -> list[tuple[_V, int]]:
    return sorted(counts.items(), key=lambda vn: (-vn[1], str(vn[0])))


def _error_group(
    family: str,
    code: int,
    tmpl: str,
    n: int,
    newest: int | None,
    oldest: int | None,
    example: str | None,
    core_s: int = 0,
) -> dict[str, Any]:
    return {
        "family": family,
        "code": code,
        "key": f"{family}:{code}",
        "code_field": "transexitcode" if family == "trans" else f"{family}errorcode",
        "diag_field": None if family == "trans" else f"{family}errordiag",
        "template": tmpl,
        "example": example,
        "count": n,
        "core_seconds": core_s,
        "core_hours": round(core_s / 3600, 3),
        "samples": [newest] if newest == oldest else [newest, oldest],
    }


def _errors_from_rows(rows: rollups.ErrorRows, *, split: bool) -> ErrorSummary:
    groups = [_error_group(*g) for g in rows.groups]
    groups.sort(key=lambda g: (-g["count"], g["key"], g["template"]))
    over_time = sorted((bucket, f"{family}:{code}", n) for bucket, family, code, n in rows.over_time)
    attempts = rows.attempts or 0
    if not split:
        return ErrorSummary(groups, over_time, [], [], [], attempts, total_core_s=rows.core_s)
    by: dict[str, list[Any]] = {"site": [], "task": [], "user": [], "workflow": []}
    core: dict[str, dict[Any, int]] = {"site": {}, "task": {}, "user": {}, "workflow": {}}
    for kind, value, n, core_s in rows.splits:
        by[kind].append((value, n))
        core[kind][value] = core_s
    for lst in by.values():
        lst.sort(key=lambda vn: (-vn[1], str(vn[0])))
    return ErrorSummary(
        groups=groups,
        over_time=over_time,
        by_site=by["site"],
        by_task=by["task"],
        by_user=by["user"],
        total_attempts=attempts,
        total_core_s=rows.core_s,
        core_by_site=core["site"],
        core_by_task=core["task"],
        core_by_user=core["user"],
        by_workflow=_by_workflow((wf, n, core["workflow"][wf]) for wf, n in by["workflow"]),
    )
