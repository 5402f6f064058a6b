"""The pilot hot path (docs/architecture.md "Hot paths", docs/decisions/0004): what the pilot
protocol calls, one module per operation, each holding its PostgreSQL statement and the ORM twin
the embedded SQLite run takes (slower, same meaning):

* `dispatch.jobs_dispatch`: getJob / acquire_jobs;
* `heartbeat.jobs_heartbeat`: an update in flight, single or bulk;
* `final_update.jobs_final_update`: an attempt reported finished or failed, single or bulk;
* `updates.job_pilot_update` / `jobs_pilot_update_bulk`: route updates to those two and answer
  the ones that wrote nothing;
* `messages`: the typed requests, updates and replies, and the fence.
"""

from __future__ import annotations

from dispatcher.services.pilot_calls.dispatch import jobs_dispatch
from dispatcher.services.pilot_calls.messages import (
    KILL,
    PILOT_STATES,
    UNLIMITED,
    DispatchRequest,
    ForeignJob,
    PilotUpdate,
    UpdateReply,
)
from dispatcher.services.pilot_calls.updates import job_pilot_update, jobs_pilot_update_bulk

__all__ = [
    "KILL",
    "PILOT_STATES",
    "UNLIMITED",
    "DispatchRequest",
    "ForeignJob",
    "PilotUpdate",
    "UpdateReply",
    "job_pilot_update",
    "jobs_dispatch",
    "jobs_pilot_update_bulk",
]
