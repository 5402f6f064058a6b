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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Count, F, Max, Min, Q

from dispatcher.models import JobAttempt
from dispatcher.states import JobStatus
from pandamon import rollups
from pandamon.errortext import message_template
from pandamon.queries.common import bucket_time, utc_bucket_text
from pandamon.rollup_sql import ERROR_FAMILIES

# Error family → (code column, diag column or None), as the attempts and jobs store them: the
# engine's list (dispatcher.retry.FAMILY_COLUMNS), through the rollup SQL that uses it too.
_FAMILIES = ERROR_FAMILIES
_V = TypeVar("_V")
_ERROR_COLUMNS = [c for _, code, diag in _FAMILIES for c in (code, diag) if c]


@dataclass
class ErrorSummary:
    groups: list[dict[str, Any]]
    over_time: list[tuple[datetime, str, int]]
    by_site: list[tuple[str, int]]
    by_task: list[tuple[int, int]]
    by_user: list[tuple[str, int]]
    total_attempts: int


def error_rollup_window(
    since: datetime | None, until: datetime | None, applied: dict[str, str]
) -> rollups.Window | None:
    """The rollup form of an /errors/ selection: a window and no filter (PostgreSQL only)."""
    if not rollups.enabled() or since is None or applied:
        return None
    return rollups.Window.of(since, until)


def errors_summary(
    q: Q, *, unit: str, split: bool = True, rollup: rollups.Window | None = None
) -> ErrorSummary:
    """The failed attempts selected by `q` (on the attempts) grouped by family:code → message
    template → sample jobs, failures over time by family:code, and with `split` the split by site,
    task and user (one count per attempt). `total_attempts` counts each failed attempt once, in
    both modes: an attempt with codes in several families is in one group of each, and one
    without any code in none.

    `rollup` is the same selection in rollup form (`error_rollup_window`). Without it, PostgreSQL
    scans the selection in the same statement and SQLite counts it with the ORM.
    """
    if not rollups.enabled():
        return _errors_summary_orm(q, unit=unit, split=split)
    if rollup is not None:
        rows = rollups.error_rows(rollup, unit=unit, split=split)
    else:
        live = JobAttempt.objects.filter(q, jobstatus=JobStatus.FAILED).only(
            "job_id", "jobstatus", "endtime", "queue", *_ERROR_COLUMNS
        )
        rows = rollups.error_rows(None, unit=unit, split=split, live=live)
    return _errors_from_rows(rows, split=split)


def task_error_groups(jeditaskid: int) -> list[dict[str, Any]]:
    """The failed attempts of one task by family:code → template, largest first: on PostgreSQL
    from the error summaries restricted to the task (errorsummary_task_idx: a few rows whatever
    the task's size) plus its unfolded deltas; on SQLite counted from its attempts."""
    if not rollups.enabled():
        return _errors_summary_orm(Q(job__task_id=jeditaskid), unit="day", split=False).groups
    rows = rollups.error_rows(None, unit="day", split=False, jeditaskid=jeditaskid, count_attempts=False)
    return _errors_from_rows(rows, split=False).groups


def _errors_summary_orm(q: Q, *, unit: str, split: bool) -> ErrorSummary:
    """The same summary from two ORM GROUP BYs (one without `split`):

    1. failed attempts per (every code and diag column, UTC time bucket), with their count and
       newest/oldest pandaid;
    2. each row unpivoted into its non-zero families, the diag masked into its template in Python;
       counts add up, newest/oldest/example are the max/min of the parts;
    3. with `split`, attempts per (site, task, user), added up per marginal.
    """
    failed = JobAttempt.objects.filter(q, jobstatus=JobStatus.FAILED).order_by()
    rows = failed.values(*_ERROR_COLUMNS, bucket=utc_bucket_text("endtime", unit)).annotate(
        n=Count("*"), newest=Max("job"), oldest=Min("job")
    )
    templates: dict[str, str] = {}
    merged: dict[tuple[str, int, str], list[Any]] = {}
    over_time: Counter[tuple[datetime, str]] = Counter()
    attempts = 0  # each attempt is in one row, whatever families it has codes in
    for row in rows:
        n = row["n"]
        attempts += n
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
                merged[family, code, template] = [n, row["newest"], row["oldest"], diag]
            else:
                part[0] += n
                part[1] = max(part[1], row["newest"])
                part[2] = min(part[2], row["oldest"])
                part[3] = min(part[3], diag)
            over_time[bucket_time(row["bucket"]), f"{family}:{code}"] += n
    groups = [_error_group(*key, *part) for key, part in merged.items()]
    groups.sort(key=lambda g: (-g["count"], g["key"], g["template"]))
    over = sorted((bucket, key, n) for (bucket, key), n in over_time.items())
    if not split:
        return ErrorSummary(groups, over, [], [], [], attempts)
    by_site: Counter[str] = Counter()
    by_task: Counter[int] = Counter()
    by_user: Counter[str] = Counter()
    for row in failed.values(
        s_site=F("queue"), s_task=F("job__task_id"), s_user=F("job__produsername")
    ).annotate(n=Count("*")):
        by_site[row["s_site"]] += row["n"]
        by_task[row["s_task"]] += row["n"]
        by_user[row["s_user"]] += row["n"]
    return ErrorSummary(
        groups=groups,
        over_time=over,
        by_site=_largest_first(by_site),
        by_task=_largest_first(by_task),
        by_user=_largest_first(by_user),
        total_attempts=sum(by_site.values()),
    )


def _largest_first(counts: Counter[_V]) -> list[tuple[_V, int]]:
    return sorted(counts.items(), key=lambda vn: (-vn[1], str(vn[0])))


def _error_group(
    family: str, code: int, tmpl: str, n: int, newest: int | None, oldest: int | None, example: str | None
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
        "samples": [newest] if newest == oldest else [newest, oldest],
    }


def _errors_from_rows(rows: rollups.ErrorRows, *, split: bool) -> ErrorSummary:
    groups = [_error_group(*g) for g in rows.groups]
    groups.sort(key=lambda g: (-g["count"], g["key"], g["template"]))
    over_time = sorted((bucket, f"{family}:{code}", n) for bucket, family, code, n in rows.over_time)
    attempts = rows.attempts or 0
    if not split:
        return ErrorSummary(groups, over_time, [], [], [], attempts)
    by: dict[str, list[Any]] = {"site": [], "task": [], "user": []}
    for kind, value, n in rows.splits:
        by[kind].append((value, n))
    for lst in by.values():
        lst.sort(key=lambda vn: (-vn[1], str(vn[0])))
    return ErrorSummary(
        groups=groups,
        over_time=over_time,
        by_site=by["site"],
        by_task=by["task"],
        by_user=by["user"],
        total_attempts=attempts,
    )
