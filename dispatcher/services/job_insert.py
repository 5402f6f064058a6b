"""The bulk inserts of a workflow submission: its job rows and dependency edges
(docs/architecture.md "Hot paths").

* PostgreSQL: COPY in text format; pandaids are reserved from the identity sequence first.
* Otherwise (SQLite, the embedded run): `bulk_create`.

Both write the same rows: every column the submission sets, the model's defaults for the others,
`creationtime` and `statechangetime` now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection
from django.utils import timezone

from dispatcher.models import Job, JobDependency, Workflow
from dispatcher.workflows import NewJob

# The columns a submission sets per job, in the order `_job_row` returns them.
_JOB_COLUMNS = (
    "jeditaskid",
    "workflow_id",
    "name",
    "label",
    "data_id",
    "produsername",
    "currentpriority",
    "pending_parents",
    "command",
    "environment",
    "container_image",
    "request_memory_mb",
    "request_cores",
    "request_walltime_s",
    "request_disk_mb",
    "cluster_id",
)


def _job_row(job: NewJob, task_id: int, workflow_id: int, username: str, priority: int) -> tuple[Any, ...]:
    return (
        task_id,
        workflow_id,
        job.name,
        job.label,
        dict(job.data_id or {}),
        username,
        job.priority if job.priority is not None else priority,
        len(job.parents) + (1 if job.cluster else 0),
        job.command,
        dict(job.environment or {}),
        job.container_image,
        job.memory_mb,
        job.cores,
        job.walltime_s,
        job.disk_mb,
        None,  # cluster_id: set once the cluster's row has its pandaid
    )


def jobs_insert(
    workflow: Workflow, nodes: Sequence[NewJob], task_of: Mapping[str, int], username: str, priority: int
) -> dict[str, int]:
    """Insert the job rows of a submission (`defined`, `pending_parents` set, created and stamped
    now); returns job name → pandaid."""
    if connection.vendor == "postgresql":
        return _jobs_copy(workflow, nodes, task_of, username, priority)
    return _jobs_bulk_create(workflow, nodes, task_of, username, priority)


def _jobs_bulk_create(
    workflow: Workflow, nodes: Sequence[NewJob], task_of: Mapping[str, int], username: str, priority: int
) -> dict[str, int]:
    now = timezone.now()
    rows = []
    for job in nodes:
        values = dict(
            zip(_JOB_COLUMNS, _job_row(job, task_of[job.name], workflow.pk, username, priority), strict=True)
        )
        values["task_id"] = values.pop("jeditaskid")
        rows.append(Job(**values, statechangetime=now))
    Job.objects.bulk_create(rows, batch_size=2000)
    ids = {row.name: row.pandaid for row in rows}
    clusters: dict[str, list[int]] = {}
    for job in nodes:
        if job.cluster:
            clusters.setdefault(job.cluster, []).append(ids[job.name])
    for name, members in clusters.items():
        Job.objects.filter(pandaid__in=members).update(cluster_id=ids[name])
    return ids


# A new job was created and entered `defined` now: the monitor's time windows (statechangetime,
# PanDA's modificationtime) must show it from the start, not only after its first transition.
_STAMPED_AT_SUBMISSION = frozenset({"creationtime", "statechangetime"})

# COPY text format: backslash, tab, newline and carriage return are escaped; NULL is \N.
_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _escape(text: str) -> str:
    """`text` escaped for COPY's text format. Most text has nothing to escape: four substring
    scans (C speed) decide that, where `str.translate` would look up every character."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPE)
    return text


def _copy_text(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return _escape(_JSON(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return _escape(str(value))


def _jobs_copy(
    workflow: Workflow, nodes: Sequence[NewJob], task_of: Mapping[str, int], username: str, priority: int
) -> dict[str, int]:
    """PostgreSQL: reserve pandaids from the identity sequence, then COPY the rows as text.

    Raw SQL because COPY is the one way to load 100,000 rows in about a second (docs/architecture.md#hot-paths).
    Every column is sent, since Django keeps defaults in Python, not in the table; the columns the
    submission does not set are one precomputed suffix shared by every line, so a row costs one
    string join.
    """
    now = timezone.now()
    set_here = {"pandaid", *_JOB_COLUMNS}
    constants = [f for f in Job._meta.concrete_fields if f.column not in set_here]
    suffix = "\t".join(
        _copy_text(now if f.attname in _STAMPED_AT_SUBMISSION else f.get_default()) for f in constants
    )
    columns = ", ".join(f'"{c}"' for c in ("pandaid", *_JOB_COLUMNS, *(f.column for f in constants)))
    escape = _escape
    user_text = escape(username)
    workflow_text = str(workflow.pk)
    json_cache: dict[int, str] = {}

    def json_text(value: Mapping[str, Any] | None) -> str:
        if not value:
            return "{}"
        key = id(value)
        cached = json_cache.get(key)
        if cached is None:
            cached = escape(_JSON(value))
            json_cache[key] = cached
        return cached

    with connection.cursor() as cursor:
        # The sequence is named once: as an argument of nextval, pg_get_serial_sequence would be
        # evaluated per row (a third of the time for 100,000 ids); the ids come as one array.
        cursor.execute("SELECT pg_get_serial_sequence('dispatcher_job', 'pandaid')")
        sequence = cursor.fetchone()[0]
        cursor.execute(
            "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)", [sequence, len(nodes)]
        )
        pandaids = sorted(cursor.fetchone()[0] or [])
        ids = {job.name: pandaid for job, pandaid in zip(nodes, pandaids, strict=True)}
        raw_cursor: Any = cursor.cursor
        with raw_cursor.copy(f"COPY dispatcher_job ({columns}) FROM STDIN") as copy:
            lines: list[str] = []
            for job, pandaid in zip(nodes, pandaids, strict=True):
                lines.append(
                    "\t".join(
                        (
                            str(pandaid),
                            str(task_of[job.name]),
                            workflow_text,
                            escape(job.name),
                            escape(job.label),
                            escape(_JSON(job.data_id)) if job.data_id else "{}",
                            user_text,
                            str(job.priority if job.priority is not None else priority),
                            str(len(job.parents) + 1) if job.cluster else str(len(job.parents)),
                            escape(job.command),
                            json_text(job.environment),
                            escape(job.container_image),
                            str(job.memory_mb),
                            str(job.cores),
                            str(job.walltime_s),
                            str(job.disk_mb),
                            str(ids[job.cluster]) if job.cluster else "\\N",
                            suffix,
                        )
                    )
                )
                if len(lines) >= 5000:
                    copy.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                copy.write("\n".join(lines) + "\n")
    return ids


def job_edges_insert(nodes: Sequence[NewJob], ids: Mapping[str, int]) -> None:
    """Insert the dependency edges of a submission (`ids`: job name → pandaid)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw_cursor: Any = cursor.cursor
            with raw_cursor.copy("COPY dispatcher_jobdependency (parent_id, child_id) FROM STDIN") as copy:
                lines: list[str] = []
                for job in nodes:
                    if not job.parents:
                        continue
                    child = str(ids[job.name])
                    lines.extend(f"{ids[parent]}\t{child}" for parent in job.parents)
                    if len(lines) >= 20000:
                        copy.write("\n".join(lines) + "\n")
                        lines.clear()
                if lines:
                    copy.write("\n".join(lines) + "\n")
        return
    JobDependency.objects.bulk_create(
        [
            JobDependency(parent_id=ids[parent], child_id=ids[job.name])
            for job in nodes
            for parent in job.parents
        ],
        batch_size=5000,
    )
