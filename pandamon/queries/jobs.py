"""Named reads of `/jobs/` (exact facets and the chart of states over time, keyset pages) and of
`/job/<pandaid>/`.

Facet counts are exact. On PostgreSQL they are one statement of the rollup read
(`rollups.job_facet_rows`, decision 0003): per-hour summaries plus the live edges for a window
and its states, or every row scanned live for a selection the summaries cannot answer. On SQLite
(the embedded run) they are ORM GROUP BYs: one over the facet columns, added up per facet in
Python, one for the chart.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Q

from dispatcher.changefeed import JOB_FACET_FIELDS
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
    Queue,
)
from dispatcher.queries import collation_orders_by_code_point
from dispatcher.states import JobStatus
from pandamon import rollup_sql, rollups
from pandamon.filters import NOT_SPECIFIED, Selection, _str_q
from pandamon.queries.common import bucket_time, utc_bucket_text, with_archive

# Facet name (PanDA's) → ORM field; the list is the change feed's (dispatcher/changefeed.py holds it).
# The time bucket rides in the same read for the chart.
JOB_FACETS: dict[str, str] = JOB_FACET_FIELDS
_CODE_FACETS = ("piloterrorcode", "exeerrorcode", "ddmerrorcode", "transexitcode")


@dataclass
class JobFacets:
    facets: dict[str, list[tuple[Any, int]]]
    total: int
    over_time: list[tuple[datetime, str, int]]


@dataclass(frozen=True)
class JobRollupSelection:
    """A /jobs/ selection the rollup answers: a time window, optionally a set of states and one
    filter on a dimension of the filter summary (decision 0013)."""

    window: rollups.Window
    states: tuple[str, ...] | None
    dim: rollups.DimFilter | None = None


# /jobs/ filters answered by the filter summary → its dimension. A site or a region is the set of
# its queues.
_DIM_OF_FILTER = {
    "computingsite": "computingsite",
    "site": "computingsite",
    "region": "computingsite",
    "produsername": "produsername",
    "label": "label",
    "jeditaskid": "jeditaskid",
}
_QUEUE_SETS = {"site": "site__name", "region": "site__region"}


def _glob_like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _dim_pred(name: str, text: str) -> rollups.Pred | None:
    """One alternative of a dimension filter as a condition on the dimension's text value, the way
    `pandamon.filters.value_q` compiles it; None when the summary cannot answer it."""
    if name in _QUEUE_SETS:
        if text == NOT_SPECIFIED:
            return None
        column = _QUEUE_SETS[name]
        queues = Queue.objects.filter(_str_q(column, text)).values_list("name", flat=True)
        return ("eq", tuple(queues))
    if name == "jeditaskid":
        return ("eq", (str(int(text)),)) if text.isdigit() else None
    if name == "computingsite" and "*" in text and text != "*":
        # A queue wildcard: the matching names from the small queue table, so the summary is read
        # by its index (a LIKE on its values would read every queue's rows of the window).
        return ("eq", tuple(Queue.objects.filter(_str_q("name", text)).values_list("name", flat=True)))
    if text == NOT_SPECIFIED:
        return ("eq", ("",))
    if text == "*":
        return ("nonempty", ())
    prefix = text[:-1]
    if text.endswith("*") and prefix and "*" not in prefix and collation_orders_by_code_point():
        # A prefix: a range of the summary's index (LIKE uses a btree only under "C").
        return ("range", (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))
    if "*" in text:
        return ("like", (_glob_like(text),))
    return ("eq", (text,))


def _dim_filter(name: str, raw: str) -> rollups.DimFilter | None:
    include: list[rollups.Pred] = []
    exclude: list[rollups.Pred] = []
    for alt in (a for a in raw.split("|") if a):
        negate = alt.startswith("!")
        pred = _dim_pred(name, alt[1:] if negate else alt)
        if pred is None:
            return None
        (exclude if negate else include).append(pred)
    return rollups.DimFilter(_DIM_OF_FILTER[name], tuple(include), tuple(exclude))


# The pairs of the filter summary (decision 0016) by their two dimensions, and the most value
# pairs a selection may name (a region's queues times a few labels or users).
_PAIR_OF_DIMS: dict[tuple[str, ...], str] = {dims: pair for pair, dims in rollup_sql.FILTER_PAIRS.items()}
_MAX_PAIR_VALUES = 10_000


def _pair_filter(names: list[str], applied: dict[str, str]) -> rollups.DimFilter | None:
    """Two dimension filters as one filter on their pair: each must be plain values (a queue, a
    site, a region, a queue wildcard, a label, a user; no negation, no other wildcard), and the
    pair's values are every combination of the two."""
    by_dim = {_DIM_OF_FILTER[n]: n for n in names}
    pair = _PAIR_OF_DIMS.get(tuple(sorted(by_dim, key=rollup_sql.FILTER_DIMENSIONS.index)))
    if pair is None:
        return None
    sides: list[tuple[str, ...]] = []
    for dim_name in rollup_sql.FILTER_PAIRS[pair]:
        dim = _dim_filter(by_dim[dim_name], applied[by_dim[dim_name]])
        if dim is None or dim.exclude or not dim.include or any(kind != "eq" for kind, _ in dim.include):
            return None
        sides.append(tuple(dict.fromkeys(v for _, values in dim.include for v in values)))
    first, second = sides
    if len(first) * len(second) > _MAX_PAIR_VALUES:
        return None
    values = tuple(rollup_sql.pair_value(a, b) for a in first for b in second)
    return rollups.DimFilter(pair, (("eq", values),))


def job_rollup_selection(
    since: datetime | None, until: datetime | None, applied: dict[str, str]
) -> JobRollupSelection | None:
    """The rollup form of a /jobs/ selection, or None when the summaries cannot answer it: not on
    PostgreSQL, no window (all time), a filter other than `jobstatus` and either one filter of
    `_DIM_OF_FILTER` (values, negations, wildcards; not a task range) or two plain-valued filters
    of a pair (`_pair_filter`), a `jobstatus` with globs, negations or "Not specified", or a window
    without a whole hour. Those selections are scanned (the page says so)."""
    if not rollups.enabled() or since is None:
        return None
    others = sorted(set(applied) - {"jobstatus"})
    if len(others) > 2 or set(others) - set(_DIM_OF_FILTER):
        return None
    dim = None
    if len(others) == 2:
        dim = _pair_filter(others, applied)
        if dim is None:
            return None
    elif others:
        (name,) = others
        dim = _dim_filter(name, applied[name])
        if dim is None:
            return None
    states = None
    if "jobstatus" in applied:
        alternatives = [a for a in applied["jobstatus"].split("|") if a]
        if not alternatives or any(a not in JobStatus.values for a in alternatives):
            return None
        states = tuple(alternatives)
    window = rollups.Window.of(since, until)
    return JobRollupSelection(window, states, dim) if window is not None else None


def jobs_facets(
    q: Q, *, unit: str, rollup: JobRollupSelection | None = None, archive: bool = False
) -> JobFacets:
    """Exact attribute summary of the selected jobs plus jobs by state over time.

    `rollup` is the same selection in rollup form (`job_rollup_selection`): the per-hour summary
    plus the edges (which look into the archive themselves when they reach it). Without it,
    PostgreSQL scans the selection in the same statement (`rollups.job_facet_rows` with `live`),
    the archived jobs too when `archive` (`archive_reached`). SQLite counts it with the ORM
    (`_jobs_facets_orm`).
    """
    if not rollups.enabled():
        return _jobs_facets_orm(q, unit=unit, archive=archive)
    fields = ("pandaid", "statechangetime", *JOB_FACETS.values())
    live: rollups.LiveSelection = (
        with_archive(Job, ArchivedJob, q, fields) if archive else Job.objects.filter(q).only(*fields)
    )
    if rollup is not None:
        rows = rollups.job_facet_rows(
            rollup.window,
            states=rollup.states,
            unit=unit,
            archive=archive,
            dim=rollup.dim,
            edge_live=live if rollup.dim is not None else None,
        )
    else:
        rows = rollups.job_facet_rows(None, states=None, unit=unit, live=live)
    facets: dict[str, Counter[Any]] = {n: Counter() for n in JOB_FACETS}
    over_time: Counter[tuple[datetime, str]] = Counter()
    for facet, value, bucket, n in rows:
        if facet == "" and bucket is not None:
            over_time[bucket, value] += n
        elif facet:
            facets[facet][rollups.facet_value(facet, value)] += n
    return _facets_finish(facets, over_time)


# Filters whose plain values select a few per cent of the jobs at most, each with an index.
_NARROW_FILTERS = frozenset({"computingsite", "produsername", "jeditaskid"})


def narrow_filter(applied: dict[str, str]) -> bool:
    """Whether the selection has a plain value (no wildcard, no negation) of a narrow filter."""
    return any(name in _NARROW_FILTERS and not any(ch in raw for ch in "*!") for name, raw in applied.items())


def past_window(since: datetime | None, until: datetime | None, now: datetime) -> bool:
    """Whether a window ended longer ago than it lasts: walking the primary key back from the newest
    job would pass more jobs changed after it than the window holds, so its newest by pandaid are
    sorted from the window's rows (`jobs_page`'s `narrow`; the time index finds them)."""
    return since is not None and until is not None and now - until > until - since


def jobs_scan_estimate(q: Q) -> int:
    """The planner's row estimate of a selection the summaries cannot answer (PostgreSQL's
    EXPLAIN; nothing is read): what the page's scan will count."""
    sql, params = Job.objects.filter(q).order_by().values("pandaid").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _jobs_facets_orm(q: Q, *, unit: str, archive: bool = False) -> JobFacets:
    """Two GROUP BYs per table (the live one, and the archive when `archive`): over every facet
    column (added up per facet in Python), and over the state and the UTC time bucket for the
    chart."""
    facets: dict[str, Counter[Any]] = {n: Counter() for n in JOB_FACETS}
    counters = list(facets.values())
    over_time: Counter[tuple[datetime, str]] = Counter()
    for model in (Job, ArchivedJob) if archive else (Job,):
        selected = model._default_manager.filter(q).order_by()
        for *values, n in selected.values_list(*JOB_FACETS.values()).annotate(n=Count("*")):
            for counter, value in zip(counters, values, strict=True):
                counter[value] += n
        chart = selected.filter(statechangetime__isnull=False).values_list(
            "jobstatus", utc_bucket_text("statechangetime", unit)
        )
        for state, bucket, n in chart.annotate(n=Count("*")):
            over_time[bucket_time(bucket), state] += n
    return _facets_finish(facets, over_time)


def _facets_finish(facets: dict[str, Counter[Any]], over_time: Counter[tuple[datetime, str]]) -> JobFacets:
    """Facets largest first (zero error codes left out), the total, the chart rows in time order."""
    lists = {
        name: sorted(((v, n) for v, n in counts.items() if n), key=lambda vn: (-vn[1], str(vn[0])))
        for name, counts in facets.items()
    }
    for code_facet in _CODE_FACETS:
        lists[code_facet] = [(v, n) for v, n in lists[code_facet] if v]
    return JobFacets(
        facets=lists,
        total=sum(n for _, n in lists["jobstatus"]),
        over_time=sorted((bucket, state, n) for (bucket, state), n in over_time.items() if n),
    )


# Sort keys (PanDA's names) → (column, descending).
JOB_SORTS: dict[str, tuple[str, bool]] = {
    "pandaid": ("pandaid", True),
    "pandaid-asc": ("pandaid", False),
    "time-descending": ("statechangetime", True),
    "time-ascending": ("statechangetime", False),
    "priority": ("currentpriority", True),
    "attemptnr": ("attemptnr", True),
}
JOB_LIST_FIELDS = (
    "pandaid",
    "name",
    "jobstatus",
    "task_id",
    "workflow_id",
    "label",
    "queue_id",
    "produsername",
    "attemptnr",
    "currentpriority",
    "creationtime",
    "statechangetime",
    "starttime",
    "endtime",
    "piloterrorcode",
    "exeerrorcode",
    "transexitcode",
    "max_rss_kb",
)


def cursor_encode(value: Any, pandaid: int) -> str:
    v = value.isoformat() if isinstance(value, datetime) else value
    return base64.urlsafe_b64encode(json.dumps([v, pandaid]).encode()).decode()


def cursor_decode(text: str, column: str) -> tuple[Any, int]:
    """Raises ValueError on anything that is not a cursor this page produced."""
    try:
        value, pandaid = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("cursor: not a cursor produced by this page") from exc
    if not isinstance(pandaid, int):
        raise ValueError("cursor: not a cursor produced by this page")
    if value is not None and column == "statechangetime":
        value = datetime.fromisoformat(str(value))
    elif value is not None and not isinstance(value, int):
        raise ValueError("cursor: not a cursor produced by this page")
    return value, pandaid


def _after_q(column: str, desc: bool, value: Any, pandaid: int) -> Q:
    """Rows strictly after (value, pandaid) in the page order; NULLs sort last."""
    if column == "pandaid":
        return Q(pandaid__lt=pandaid) if desc else Q(pandaid__gt=pandaid)
    op = "lt" if desc else "gt"
    if value is None:
        return Q(**{f"{column}__isnull": True}) & Q(**{f"pandaid__{op}": pandaid})
    return (
        Q(**{f"{column}__{op}": value})
        | (Q(**{column: value}) & Q(**{f"pandaid__{op}": pandaid}))
        | Q(**{f"{column}__isnull": True})
    )


def _page_key(column: str, desc: bool) -> Any:
    """The page order as a Python sort key (with `reverse=desc`): NULLs last either way."""
    if column == "pandaid":
        return lambda row: row["pandaid"]
    if desc:
        return lambda row: (row[column] is not None, row[column], row["pandaid"])
    return lambda row: (row[column] is None, row[column], row["pandaid"])


@dataclass(frozen=True)
class Merge:
    """`jobs_page`'s merged read: the selection's jobs all have one of `values` in `field`, the
    user (`produsername`) or the queue (`queue_id`); `q` is the selection's other filters (not the
    user glob, queue, site or region filter the values stand for, which each value satisfies) and
    `since`, `until` its window on `statechangetime`."""

    field: str
    values: Sequence[str | None]
    q: Q
    since: datetime | None
    until: datetime | None


# The /jobs/ filters a merged read's values stand for, by the field it merges on.
_MERGED_FILTERS = {
    "produsername": frozenset({"produsername"}),
    "queue_id": frozenset(name for name, dim in _DIM_OF_FILTER.items() if dim == "computingsite"),
}


def merge_of(rollup: JobRollupSelection | None, facets: JobFacets, sel: Selection) -> Merge | None:
    """`jobs_page`'s `merge` for a selection: under a user filter its users, under a queue, site or
    region filter (alone or paired with a label or a user) its queues, as the summary's facets
    name them; None otherwise."""
    dim = rollup.dim.dim if rollup is not None and rollup.dim is not None else None
    if dim == "produsername":
        users = [user for user, _ in facets.facets["produsername"]]
        q = sel.filters_without(_MERGED_FILTERS["produsername"])
        return Merge("produsername", users, q, sel.since, sel.until)
    if dim == "computingsite" or dim in rollup_sql.FILTER_PAIRS:
        queues = [queue for queue, _ in facets.facets["computingsite"]]
        return Merge(
            "queue_id", queues, sel.filters_without(_MERGED_FILTERS["queue_id"]), sel.since, sel.until
        )
    return None


# A narrow selection (`narrow_filter`) holding this many jobs or more, by the summaries' count, is
# listed by walking its queue's or user's (field, pandaid) index back from the newest (`jobs_page`'s
# `merge`), not by sorting all its rows: that many jobs of one queue in the window are the queue's
# newest. The production day's queue held 148,000 jobs in 6 hours: sorted 590 ms, walked ~1 ms.
WALK_FROM_JOBS = 10_000


def sorts_narrow(applied: dict[str, str], facets: JobFacets, merge: Merge | None, *, archive: bool) -> bool:
    """`jobs_page`'s `narrow` for a recent window: a narrow selection (`narrow_filter`) sorts its
    rows, unless it is WALK_FROM_JOBS jobs or more and its merged read applies (`merge_applies`)."""
    if not narrow_filter(applied):
        return False
    return not (
        merge is not None and merge_applies(merge, archive=archive) and facets.total >= WALK_FROM_JOBS
    )


# The most users or queues whose newest jobs `jobs_page` merges (a subquery each); more are walked
# as one.
MAX_MERGED_VALUES = 200


def merge_applies(merge: Merge, *, archive: bool) -> bool:
    """Whether `jobs_page` can read `merge`'s values one by one: not with the archive (which the
    merged read does not reach), up to MAX_MERGED_VALUES values, none empty."""
    return not archive and len(merge.values) <= MAX_MERGED_VALUES and all(merge.values)


def jobs_page(
    q: Q,
    *,
    sort: str,
    cursor: str | None,
    limit: int,
    archive: bool = False,
    narrow: bool = False,
    merge: Merge | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the job list in keyset order; returns rows and the next page's cursor. With
    `archive` (the selection's window reaches the archive: `archive_reached`) the same keyset read
    runs on the archived jobs too and the two pages are merged; otherwise the archive is not read.

    `narrow`: the selection is a few per cent of the jobs at most and has its own index (one queue,
    user or task, `narrow_filter`; a window long past, `past_window`): the newest by pandaid are
    then sorted from that index's rows (`pandaid + 0` hides the primary key's order from the
    planner), not found by walking the primary key backwards, which reads every newer job when the
    selection's jobs are old.

    `merge` (`Merge`): the selection's jobs all have one of its values in its field, the user
    (`produsername`) or the queue (`queue_id`): a user wildcard's users, a region's or a negation's
    queues, which the filter summary's facets name. In pandaid order each value's newest are read
    from that field's index (`job_user_pandaid_idx`, `job_queue_pandaid_idx`) and merged
    (PostgreSQL's Merge Append reads a few rows of each), instead of walking the primary key past
    every newer job of the other values: for a quarter of the users at 10M jobs, ~1 ms against ~1 s.
    Up to MAX_MERGED_VALUES values, none empty; not with `archive`."""
    column, desc = JOB_SORTS[sort]
    after = None
    if cursor:
        value, pandaid = cursor_decode(cursor, column)
        after = _after_q(column, desc, value, pandaid)
    if column == "pandaid" and narrow:
        key = F("pandaid") + 0
        order = [key.desc() if desc else key.asc()]
    elif column == "pandaid":
        order = [F("pandaid").desc() if desc else F("pandaid").asc()]
    else:
        order = [
            F(column).desc(nulls_last=True) if desc else F(column).asc(nulls_last=True),
            F("pandaid").desc() if desc else F("pandaid").asc(),
        ]
    if column == "pandaid" and not narrow and merge is not None and merge_applies(merge, archive=archive):
        return _page_end(_merged(merge, after, desc, limit + 1), column, limit)
    rows: list[dict[str, Any]] = []
    for model in (Job, ArchivedJob) if archive else (Job,):
        qs = model._default_manager.filter(q)
        if after is not None:
            qs = qs.filter(after)
        rows += list(qs.order_by(*order).values(*JOB_LIST_FIELDS)[: limit + 1])
    if archive:
        rows = sorted(rows, key=_page_key(column, desc), reverse=desc)[: limit + 1]
    return _page_end(rows, column, limit)


def _merged(merge: Merge, after: Q | None, desc: bool, n: int) -> list[dict[str, Any]]:
    """The first `n` rows in pandaid order (`desc`) of the merged selection, as one UNION ALL of
    each value's first `n` cut to `n`.

    Each part is a walk of the field's (field, pandaid) index from the value's newest (or oldest)
    job, the window and the other filters checked on the rows it meets, until it has `n`: the
    value is the range [value, value] ordered by (field, pandaid), an order no other index gives,
    and the window an expression no index serves. Otherwise PostgreSQL, which cannot know that
    pandaids and change times rise together, costs other plans lower: the primary key (one user's
    part walked 1.9M newer jobs of other users, 0.5 s, on the 10M-job benchmark) or the queue's
    time index (a 12-hour window's every job of the queue read and sorted, 13 ms a queue)."""
    if not merge.values:
        return []
    order = "-pandaid" if desc else "pandaid"
    by_field = f"-{merge.field}" if desc else merge.field
    selected = Job.objects.filter(merge.q)
    if after is not None:
        selected = selected.filter(after)
    if merge.since is not None or merge.until is not None:
        selected = selected.alias(
            changed=ExpressionWrapper(F("statechangetime") + timedelta(0), DateTimeField())
        )
        if merge.since is not None:
            selected = selected.filter(changed__gte=merge.since)
        if merge.until is not None:
            selected = selected.filter(changed__lt=merge.until)
    parts = [
        selected.filter(**{f"{merge.field}__gte": value, f"{merge.field}__lte": value})
        .order_by(by_field, order)
        .values(*JOB_LIST_FIELDS)[:n]
        for value in sorted(map(str, merge.values))
    ]
    if len(parts) == 1:
        return list(parts[0])
    return list(parts[0].union(*parts[1:], all=True).order_by(order)[:n])


def _page_end(rows: list[dict[str, Any]], column: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The page's rows and, when there are more than `limit`, the next page's cursor."""
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = cursor_encode(last[column], last["pandaid"])
    return rows, next_cursor


# --- /job/<pandaid>/ ----------------------------------------------------------------------------


def job_detail(pandaid: int) -> Job | ArchivedJob | None:
    """The live job with its queue, task, workflow and, for a cluster member, its cluster job (one
    query); else the archived one (looked up only when the id is not live)."""
    job = (
        Job.objects.select_related("queue__site", "task", "workflow", "cluster")
        .filter(pandaid=pandaid)
        .first()
    )
    if job is not None:
        return job
    return (
        ArchivedJob.objects.select_related("queue__site", "task", "workflow").filter(pandaid=pandaid).first()
    )


def job_attempts(pandaid: int, *, archived: bool = False) -> list[JobAttempt] | list[ArchivedJobAttempt]:
    if archived:
        return list(ArchivedJobAttempt.objects.filter(job_id=pandaid).order_by("attemptnr"))
    return list(JobAttempt.objects.filter(job_id=pandaid).order_by("attemptnr"))


def job_status_history(
    pandaid: int, *, archived: bool = False
) -> list[JobStatusLog] | list[ArchivedJobStatusLog]:
    if archived:
        return list(ArchivedJobStatusLog.objects.filter(job_id=pandaid).order_by("time", "id"))
    return list(JobStatusLog.objects.filter(job_id=pandaid).order_by("time", "id"))


def job_files(pandaid: int, *, archived: bool = False) -> list[File] | list[ArchivedFile]:
    if archived:
        return list(ArchivedFile.objects.filter(job_id=pandaid).order_by("role", "lfn"))
    return list(File.objects.filter(job_id=pandaid).order_by("role", "lfn"))


def job_relatives(
    pandaid: int, *, archived: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Parents and children with their states, in one query (edges of both directions)."""
    model = ArchivedJobDependency if archived else JobDependency
    edges = list(
        model.objects.filter(Q(child_id=pandaid) | Q(parent_id=pandaid)).values(
            "parent_id",
            "child_id",
            "parent__name",
            "parent__jobstatus",
            "child__name",
            "child__jobstatus",
        )
    )
    parents = [
        {"pandaid": e["parent_id"], "name": e["parent__name"], "jobstatus": e["parent__jobstatus"]}
        for e in edges
        if e["child_id"] == pandaid
    ]
    children = [
        {"pandaid": e["child_id"], "name": e["child__name"], "jobstatus": e["child__jobstatus"]}
        for e in edges
        if e["parent_id"] == pandaid
    ]
    return parents, children


def job_cluster_members(pandaid: int) -> list[dict[str, Any]]:
    """A cluster job's members with their states, in submission order (empty for other jobs: one
    probe of the partial index of members)."""
    rows = Job.objects.filter(cluster_id=pandaid).order_by("pandaid")
    return [dict(row) for row in rows.values("pandaid", "name", "label", "jobstatus", "attemptnr")]


def job_log_chunks(pandaid: int, *, after: int, attemptnr: int | None, limit: int = 200) -> list[PayloadLog]:
    """Payload-log chunks after sequence `after` of the given attempt (the live tail)."""
    qs = PayloadLog.objects.filter(job_id=pandaid, sequence__gt=after)
    if attemptnr is not None:
        qs = qs.filter(attemptnr=attemptnr)
    return list(qs.order_by("attemptnr", "sequence")[:limit])
