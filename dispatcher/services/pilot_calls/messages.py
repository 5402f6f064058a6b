"""What a pilot asks and is answered, typed: the dispatch request, the job update and its reply,
and the fence every update must pass before it writes.

The protocol layer (dispatcher.protocol.pilot) builds these from either API's parameters; the
operations of this package (dispatch, heartbeat, final update) take and return them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dispatcher.states import JOB_ACTIVE, JobStatus

# No dispatch limit: a column compared against this always fits.
UNLIMITED = 2**31 - 1

# In-flight states in the order a pilot moves through them; a heartbeat never lowers the rank.
RANK = {JobStatus.SENT: 0, JobStatus.STARTING: 1, JobStatus.RUNNING: 2, JobStatus.HOLDING: 3}
PILOT_FINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED})
PILOT_STATES = frozenset(RANK) | PILOT_FINAL
# The in-flight states as a statement parameter, not literals: the generic plan must find rows by
# primary key, and with literal states the planner may prefer scanning the partial index of
# in-flight jobs (dispatcher/services/prepared.py, docs/decisions/0004).
IN_FLIGHT = sorted(s.value for s in JOB_ACTIVE)
# Measurements a pilot reports (PilotUpdate.metrics), stored on the job row.
METRIC_NAMES = ("cpu_time_s", "max_rss_kb", "max_pss_kb", "actual_cores")

# The command that tells a pilot to kill its payload.
KILL = "tobekilled"


@dataclass(frozen=True)
class DispatchRequest:
    """What a pilot asks for; limits default to "no limit"."""

    queue: str
    n_jobs: int = 1
    memory_mb: int = UNLIMITED
    disk_mb: int = UNLIMITED
    cores: int = UNLIMITED
    walltime_s: int = UNLIMITED
    prodsourcelabel: str = ""  # empty: any label
    resource_type: str = ""  # empty: any; else jobs of that type or without one
    node: str = ""
    pilot_id: str = ""
    batch_id: str = ""
    worker_id: int | None = None


@dataclass(frozen=True)
class PilotUpdate:
    """One updateJob / update_job, already typed by the protocol layer."""

    pandaid: int
    status: str
    attemptnr: int
    lease: str = ""
    node: str = ""
    pilot_id: str = ""
    batch_id: str = ""
    starttime: dt.datetime | None = None
    endtime: dt.datetime | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the METRIC_NAMES
    errors: dict[str, Any] = field(default_factory=dict)  # piloterrorcode, transexitcode, …


@dataclass(frozen=True)
class UpdateReply:
    """`command` is None or KILL; `status` is the job's status after the call."""

    command: str | None
    status: str
    note: str = ""


class ForeignJob(Exception):
    """The job belongs to a queue the pilot's token is not bound to."""

    def __init__(self, pandaid: int, queue: str) -> None:
        super().__init__(f"job {pandaid} belongs to queue {queue!r}, which this pilot token is not bound to")


def lease_matches(row_lease: str, require_lease: bool | None, update_lease: str) -> bool:
    """The lease part of the fence: an echoed lease must be the job's; none echoed passes only on a
    queue that does not require it (the real PanDA pilot's; `require_lease` None: the job has no
    queue). The statements of this package test the same in SQL."""
    return row_lease == update_lease if update_lease else not require_lease


def fence_matches(row: Mapping[str, Any], update: PilotUpdate, queues: frozenset[str] | None) -> bool:
    """Whether `update` may write the job `row` (jobstatus, attemptnr, lease, queue_id and the
    queue's require_lease as `queue__require_lease`): the job is in flight at the update's attempt,
    with its lease (`lease_matches`), in a queue of the pilot's token (`queues` None: any). The
    statements of this package test the same in SQL."""
    return (
        row["jobstatus"] in JOB_ACTIVE
        and row["attemptnr"] == update.attemptnr
        and lease_matches(row["lease"], row["queue__require_lease"], update.lease)
        and (queues is None or str(row["queue_id"]) in queues)
    )
