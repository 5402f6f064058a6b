"""PanDA's query grammar, compiled to ORM lookups from an allow-list (monitor.md §2, §12.2).

    ?jobstatus=failed|holding        OR of alternatives
    ?computingsite=!CERN*            NOT (each `!` alternative is excluded)
    ?jobname=*visit_12*              glob: `*` matches anything (index-friendly prefix when possible)
    ?produsername=*                  not empty / not null
    ?label=Not specified             empty or null
    ?attemptnr=2:5  ?priorityrange=100:   integer ranges lo:hi, either end open
    ?hours=12  ?days=3  ?date_from=2026-11-20T06:00&date_to=2026-11-21

Values never reach SQL text: every lookup is a bound parameter. A parameter that is neither a filter
of the page nor one of its controls is *reported* (shown on the page and in `?json`), not an error;
a malformed value of a known filter is a `FilterError` (the view answers 400 naming it).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from dispatcher.states import JobStatus

NOT_SPECIFIED = "Not specified"
# Query parameters that are page controls, not filters, on every page.
CONTROLS = frozenset(
    {
        "json",
        "hours",
        "days",
        "date_from",
        "date_to",
        "sortby",
        "limit",
        "display_limit",
        "cursor",
        "timestamp",
    }
)
MAX_ALTERNATIVES = 50
MAX_VALUE_LENGTH = 400


class FilterError(ValueError):
    """A known filter with a value it cannot take; the message names the parameter."""


@dataclass(frozen=True)
class Field:
    """One filterable field: the URL name, the ORM path, and the kind of value it takes."""

    column: str
    kind: str = "str"  # str | int | choice
    choices: tuple[str, ...] = ()
    # For a foreign key stored by name (Job.queue → computingsite): globs must go through the join.
    glob_column: str | None = None


@dataclass
class Selection:
    """The compiled request: the filter Q, the window, what was applied and what was ignored."""

    q: Q
    since: datetime | None
    until: datetime | None
    applied: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    window_label: str = ""
    # Each applied filter's own condition (`q` is their AND with the window's).
    filter_qs: dict[str, Q] = field(default_factory=dict)

    def filters_without(self, names: Collection[str]) -> Q:
        """The applied filters less `names`, without the window."""
        q = Q()
        for name, filter_q in self.filter_qs.items():
            if name not in names:
                q &= filter_q
        return q

    def locked_query(self, params: Mapping[str, str]) -> str:
        """The same selection with the window frozen as absolute dates (a time-locked link)."""
        from urllib.parse import urlencode

        kept = {
            k: v for k, v in params.items() if k not in {"hours", "days", "date_from", "date_to", "cursor"}
        }
        if self.since is not None:
            kept["date_from"] = self.since.strftime("%Y-%m-%dT%H:%M")
        if self.until is not None:
            kept["date_to"] = self.until.strftime("%Y-%m-%dT%H:%M")
        return urlencode(kept)


def _glob_q(column: str, pattern: str) -> Q:
    parts = pattern.split("*")
    if pattern == "*":
        return Q(**{f"{column}__isnull": False}) & ~Q(**{column: ""})
    if connection.vendor == "sqlite":
        # SQLite's LIKE (startswith/endswith/contains) ignores ASCII case, PostgreSQL's does not:
        # the regex (Python's re on SQLite) matches exactly as PostgreSQL does.
        return Q(**{f"{column}__regex": "^" + ".*".join(re.escape(p) for p in parts) + "$"})
    if len(parts) == 2 and parts[1] == "":
        return Q(**{f"{column}__startswith": parts[0]})
    if len(parts) == 2 and parts[0] == "":
        return Q(**{f"{column}__endswith": parts[1]})
    if len(parts) == 3 and parts[0] == "" and parts[2] == "":
        return Q(**{f"{column}__contains": parts[1]})
    return Q(**{f"{column}__regex": "^" + ".*".join(re.escape(p) for p in parts) + "$"})


def _str_q(column: str, value: str, glob_column: str | None = None) -> Q:
    if value == NOT_SPECIFIED:
        return Q(**{f"{column}__isnull": True}) | Q(**{column: ""})
    if "*" in value:
        if glob_column and value == "*":
            return Q(**{f"{column}__isnull": False})
        return _glob_q(glob_column or column, value)
    return Q(**{column: value})


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FilterError(f"{name}: {text!r} is not an integer") from None


def _int_q(name: str, column: str, value: str) -> Q:
    if value == "*":
        return Q(**{f"{column}__isnull": False})
    if ":" in value:
        lo, _, hi = value.partition(":")
        q = Q()
        if lo:
            q &= Q(**{f"{column}__gte": _int(name, lo)})
        if hi:
            q &= Q(**{f"{column}__lte": _int(name, hi)})
        if not lo and not hi:
            raise FilterError(f"{name}: a range needs at least one end (lo:hi)")
        return q
    return Q(**{column: _int(name, value)})


def value_q(name: str, spec: Field, raw: str) -> Q:
    """Compile one parameter value (`a|b|!c*`) for one field."""
    if len(raw) > MAX_VALUE_LENGTH:
        raise FilterError(f"{name}: value longer than {MAX_VALUE_LENGTH} characters")
    alternatives = [a for a in raw.split("|") if a != ""]
    if not alternatives:
        raise FilterError(f"{name}: empty value")
    if len(alternatives) > MAX_ALTERNATIVES:
        raise FilterError(f"{name}: more than {MAX_ALTERNATIVES} alternatives")
    include = Q()
    exclude = Q()
    has_include = False
    for alt in alternatives:
        negate = alt.startswith("!")
        text = alt[1:] if negate else alt
        if not text:
            raise FilterError(f"{name}: '!' needs a value after it")
        if spec.kind == "int":
            q = _int_q(name, spec.column, text)
        elif spec.kind == "choice":
            if "*" not in text and text != NOT_SPECIFIED and text not in spec.choices:
                raise FilterError(f"{name}: {text!r} is not one of {', '.join(spec.choices)}")
            q = _str_q(spec.column, text)
        else:
            q = _str_q(spec.column, text, spec.glob_column)
        if negate:
            exclude |= q
        else:
            include |= q
            has_include = True
    result = include if has_include else Q()
    if exclude:
        result &= ~exclude
    return result


def parse_time(name: str, text: str) -> datetime:
    """`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DD HH:MM[:SS]`, always UTC."""
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise FilterError(f"{name}: {text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)")


def _positive(name: str, text: str, *, maximum: int) -> int:
    n = _int(name, text)
    if n <= 0 or n > maximum:
        raise FilterError(f"{name}: must be between 1 and {maximum}")
    return n


def window(
    params: Mapping[str, str], *, default_hours: int | None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None, str]:
    """The time window of a request: `hours`, `days`, or `date_from`/`date_to`; else the default."""
    now = now or timezone.now()
    if "date_from" in params or "date_to" in params:
        since = parse_time("date_from", params["date_from"]) if params.get("date_from") else None
        until = parse_time("date_to", params["date_to"]) if params.get("date_to") else None
        if since and until and until <= since:
            raise FilterError("date_to must be after date_from")
        label = f"{since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M}" if since and until else ""
        if not label:
            label = f"from {since:%Y-%m-%d %H:%M}" if since else f"until {until:%Y-%m-%d %H:%M}"
        return since, until, label + " UTC"
    if params.get("days"):
        days = _positive("days", params["days"], maximum=3650)
        return now - timedelta(days=days), None, f"last {days} days"
    if params.get("hours"):
        hours = _positive("hours", params["hours"], maximum=24 * 3650)
        return now - timedelta(hours=hours), None, f"last {hours} hours"
    if default_hours is None:
        return None, None, "all time"
    return now - timedelta(hours=default_hours), None, f"last {default_hours} hours"


def compile_selection(
    params: Mapping[str, str],
    fields: Mapping[str, Field],
    *,
    time_column: str | None,
    default_hours: int | None,
    extra_controls: frozenset[str] = frozenset(),
    unwindowed_by: frozenset[str] = frozenset(),
    now: datetime | None = None,
) -> Selection:
    """Compile a page's query string. Filters in `unwindowed_by` (a task, a workflow, one job) drop
    the default window, as PanDA does: a task's jobs are wanted whatever their age."""
    q = Q()
    applied: dict[str, str] = {}
    filter_qs: dict[str, Q] = {}
    unknown: list[str] = []
    for name, raw in params.items():
        if name in CONTROLS or name in extra_controls:
            continue
        spec = fields.get(name)
        if spec is None:
            unknown.append(name)
            continue
        filter_qs[name] = value_q(name, spec, raw)
        q &= filter_qs[name]
        applied[name] = raw
    default = None if applied.keys() & unwindowed_by else default_hours
    since, until, label = window(params, default_hours=default, now=now)
    if time_column is not None:
        if since is not None:
            q &= Q(**{f"{time_column}__gte": since})
        if until is not None:
            q &= Q(**{f"{time_column}__lt": until})
    return Selection(
        q=q,
        since=since,
        until=until,
        applied=applied,
        unknown=sorted(unknown),
        window_label=label,
        filter_qs=filter_qs,
    )


_STATES = tuple(JobStatus.values)
_FAMILIES = ("pilot", "exe", "ddm", "jobdispatcher", "sup", "taskbuffer")
_ERROR_CODES = {
    **{f"{family}errorcode": Field(f"{family}errorcode", "int") for family in _FAMILIES},
    # Diags take globs, so an /errors/ message template is itself a filter.
    **{f"{family}errordiag": Field(f"{family}errordiag") for family in _FAMILIES},
}

# /jobs/ (and the job-level pages): PanDA's names where they exist.
JOB_FIELDS: dict[str, Field] = {
    "pandaid": Field("pandaid", "int"),
    "jeditaskid": Field("task_id", "int"),
    "workflow": Field("workflow_id", "int"),
    "jobstatus": Field("jobstatus", "choice", _STATES),
    "computingsite": Field("queue_id", glob_column="queue__name"),
    "site": Field("queue__site__name"),
    "region": Field("queue__site__region"),
    "produsername": Field("produsername"),
    "label": Field("label"),
    "jobname": Field("name"),
    "prodsourcelabel": Field("prodsourcelabel"),
    "attemptnr": Field("attemptnr", "int"),
    "resourcetype": Field("resource_type"),
    "priorityrange": Field("currentpriority", "int"),
    "currentpriority": Field("currentpriority", "int"),
    "modificationhost": Field("node"),
    "transformation": Field("transformation"),
    "batchid": Field("batch_id"),
    "workerid": Field("worker_id", "int"),
    "transexitcode": Field("transexitcode", "int"),
    **_ERROR_CODES,
}
JOB_UNWINDOWED = frozenset({"pandaid", "jeditaskid", "workflow", "jobname", "batchid", "workerid"})

# /errors/: failed attempts (JobAttempt rows), filtered through their job where needed.
ERROR_FIELDS: dict[str, Field] = {
    "computingsite": Field("queue"),
    "site": Field("job__queue__site__name"),
    "jeditaskid": Field("job__task_id", "int"),
    "workflow": Field("job__workflow_id", "int"),
    "produsername": Field("job__produsername"),
    "label": Field("job__label"),
    "attemptnr": Field("attemptnr", "int"),
    "modificationhost": Field("node"),
    "transexitcode": Field("transexitcode", "int"),
    **_ERROR_CODES,
}

TASK_FIELDS: dict[str, Field] = {
    "jeditaskid": Field("jeditaskid", "int"),
    "workflow": Field("workflow_id", "int"),
    "status": Field("status"),
    "username": Field("username"),
    "taskname": Field("name"),
    "label": Field("label"),
}

WORKFLOW_FIELDS: dict[str, Field] = {
    "id": Field("id", "int"),
    "status": Field("status"),
    "username": Field("owner__username"),
    "name": Field("name"),
}


def int_param(params: Mapping[str, str], name: str, *, default: int, maximum: int) -> int:
    if not params.get(name):
        return default
    return _positive(name, params[name], maximum=maximum)


def single_params(query: Any) -> dict[str, str]:
    """A QueryDict as name → last value (PanDA's URLs carry each filter once)."""
    return {k: query.get(k, "") for k in query}
