"""updateJob / update_job and update_jobs_bulk: route each pilot update to its operation (the
heartbeat or the final update) and answer the ones that wrote nothing.

One path for one update and for a bulk: a single update is a batch of one. A batch applies its
heartbeats first (`heartbeat.jobs_heartbeat`, one statement on PostgreSQL), then its final updates
(`final_update.jobs_final_update`); an update whose fence did not match is diagnosed alone, after a
`finished` one had its chance as a late report (`late_report.job_late_finish_reconcile`).
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.models import Job
from dispatcher.services.pilot_calls.final_update import jobs_final_update
from dispatcher.services.pilot_calls.heartbeat import jobs_heartbeat
from dispatcher.services.pilot_calls.late_report import job_late_finish_reconcile
from dispatcher.services.pilot_calls.messages import (
    KILL,
    PILOT_FINAL,
    ForeignJob,
    PilotUpdate,
    UpdateReply,
    lease_matches,
)
from dispatcher.states import JobStatus


def job_pilot_update(*, update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply:
    """Apply one pilot update. Raises ForeignJob when the job is in a queue outside `queues`
    (None: any queue) — nothing is written then."""
    [reply] = jobs_pilot_update_bulk(updates=[update], queues=queues)
    if isinstance(reply, ForeignJob):
        raise reply
    return reply


def jobs_pilot_update_bulk(
    *, updates: Sequence[PilotUpdate], queues: frozenset[str] | None
) -> list[UpdateReply | ForeignJob]:
    """Many pilot updates (Harvester's update_jobs_bulk); one reply per update, in order.
    A ForeignJob in the result marks an update refused for its queue."""
    replies: list[UpdateReply | None] = [None] * len(updates)
    heartbeats = [i for i, u in enumerate(updates) if u.status not in PILOT_FINAL]
    finals = [i for i, u in enumerate(updates) if u.status in PILOT_FINAL]
    for positions, apply in ((heartbeats, jobs_heartbeat), (finals, jobs_final_update)):
        if positions:
            for i, reply in zip(positions, apply([updates[i] for i in positions], queues), strict=True):
                replies[i] = reply
    out: list[UpdateReply | ForeignJob] = []
    for update, reply in zip(updates, replies, strict=True):
        if reply is None and update.status == JobStatus.FINISHED:
            reply = job_late_finish_reconcile(update, queues)
        if reply is None:
            try:
                reply = job_update_diagnose(update, queues)
            except ForeignJob as exc:
                out.append(exc)
                continue
        out.append(reply)
    return out


def job_update_diagnose(update: PilotUpdate, queues: frozenset[str] | None) -> UpdateReply:
    """The answer to an update whose fence did not match: ForeignJob (403) for another queue's job
    (a job waiting for brokerage has none: a retried job's former pilot is told to die);
    a duplicate of an ended attempt is fine; anything else (unknown job, stale attempt or lease,
    killed job, an update without the lease its queue requires) is told to die."""
    row = (
        Job.objects.filter(pandaid=update.pandaid)
        .values("jobstatus", "attemptnr", "lease", "queue_id", "queue__require_lease")
        .first()
    )
    if row is None:
        return UpdateReply(command=KILL, status="", note=f"unknown job {update.pandaid}")
    queue = str(row["queue_id"] or "")
    if queues is not None and queue and queue not in queues:
        raise ForeignJob(update.pandaid, queue)
    if row["attemptnr"] != update.attemptnr:
        return UpdateReply(
            command=KILL,
            status=row["jobstatus"],
            note=f"stale attempt {update.attemptnr} (current {row['attemptnr']})",
        )
    if not lease_matches(row["lease"], row["queue__require_lease"], update.lease):
        return UpdateReply(command=KILL, status=row["jobstatus"], note="the lease is not this attempt's")
    if row["jobstatus"] in (JobStatus.FINISHED, JobStatus.FAILED):
        return UpdateReply(command=None, status=row["jobstatus"], note="duplicate update of an ended attempt")
    return UpdateReply(command=KILL, status=row["jobstatus"], note=f"job is {row['jobstatus']}")
