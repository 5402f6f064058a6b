"""Writes of the harvester app: payload log chunks from pilots, and the worker bookkeeping of the
provisioner (`harvester.provisioning`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from dispatcher.models import Job, PayloadLog, Queue
from dispatcher.states import JOB_ACTIVE
from harvester.models import WORKER_FINAL, Worker, WorkerStatus
from harvester.plugins.base import Submitted

# The most one append_log call may carry; the pilot sends at most 16 KiB.
MAX_CHUNK_BYTES = 64 * 1024
CAP_MARKER = "\n[ailuro: payload log capped at {cap} bytes; the rest is in the job's work dir]\n"


class StaleDispatch(Exception):
    """No active job matches (pandaid, attempt, lease): the pilot lost this job."""


class QueueNotAllowed(Exception):
    """The pilot's token is bound to other queues."""


class _OctetLength(models.Func):
    """Bytes of a text column: octet_length on PostgreSQL, length(CAST(… AS BLOB)) on SQLite."""

    function = "OCTET_LENGTH"
    output_field = models.BigIntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra)


@dataclass(frozen=True)
class LogAppendResult:
    stored_bytes: int  # of this chunk (after capping)
    total_bytes: int  # stored for the attempt so far
    capped: bool
    duplicate: bool = False


def _utf8_prefix(text: str, limit: int) -> str:
    return text.encode()[: max(limit, 0)].decode(errors="ignore")


@transaction.atomic
def payload_log_append(
    *,
    pandaid: int,
    attemptnr: int,
    lease: str,
    sequence: int,
    text: str,
    queues: list[str] | None = None,
) -> LogAppendResult:
    """Store one chunk of a payload's output, within the per-attempt cap.

    1. Lock the job row if (pandaid, attemptnr, lease) is a live dispatch, else StaleDispatch;
       the lock also serialises concurrent chunks of one attempt so the cap holds.
    2. A sequence already stored is a retry of a lost reply: answer as stored, write nothing.
    3. Cut the chunk so the attempt's total stays within PAYLOAD_LOG_CAP_BYTES; the chunk that
       reaches the cap ends with a marker saying so; later chunks are dropped.
    """
    if not lease:
        raise StaleDispatch("no lease")
    job = (
        Job.objects.select_for_update()
        .filter(pandaid=pandaid, attemptnr=attemptnr, lease=lease, jobstatus__in=JOB_ACTIVE)
        .only("pandaid", "queue_id")
        .first()
    )
    if job is None:
        raise StaleDispatch(f"job {pandaid} attempt {attemptnr} is not dispatched under this lease")
    if queues and job.queue_id not in queues:
        raise QueueNotAllowed(f"token is not bound to queue {job.queue_id}")
    chunks = PayloadLog.objects.filter(job_id=pandaid, attemptnr=attemptnr)
    seen = chunks.aggregate(
        n=Coalesce(Sum(_OctetLength("text")), 0), dup=Count("pk", filter=Q(sequence=sequence))
    )
    total = int(seen["n"])
    if seen["dup"]:
        return LogAppendResult(stored_bytes=0, total_bytes=total, capped=False, duplicate=True)
    cap = int(settings.AILURO["PAYLOAD_LOG_CAP_BYTES"])
    marker = CAP_MARKER.format(cap=cap)
    reserve = len(marker.encode())
    # Invariant: uncapped chunks keep the total <= cap - reserve; the capping chunk (cut + marker)
    # lifts it above that. So a total above cap - reserve means the marker is already stored.
    if total > cap - reserve:
        return LogAppendResult(stored_bytes=0, total_bytes=total, capped=True)
    capped = len(text.encode()) > cap - reserve - total
    if capped:
        text = _utf8_prefix(text, cap - reserve - total) + marker
    PayloadLog.objects.create(job_id=pandaid, attemptnr=attemptnr, sequence=sequence, text=text)
    stored = len(text.encode())
    return LogAppendResult(stored_bytes=stored, total_bytes=total + stored, capped=capped)


# ---------------------------------------------------------------------------------------- workers


def worker_create(*, queue: Queue, plugin: str) -> Worker:
    return Worker.objects.create(queue=queue, plugin=plugin, status=WorkerStatus.SUBMITTED)


def worker_record_submission(*, worker_id: int, submitted: Submitted) -> None:
    Worker.objects.filter(pk=worker_id).update(
        batch_id=submitted.batch_id[:80],
        stdout_path=submitted.stdout_path[:400],
        stderr_path=submitted.stderr_path[:400],
        modified_at=timezone.now(),
    )


def worker_set_state(
    *, worker_id: int, status: str, exit_code: int | None = None, node: str = "", diag: str = ""
) -> bool:
    """Move a live worker to `status` (compare-and-set on the live states, so a worker already
    final is never changed back). Returns whether the row changed."""
    now = timezone.now()
    fields: dict[str, Any] = {"status": status, "modified_at": now}
    if node:
        fields["node"] = node[:128]
    if diag:
        fields["diag"] = diag[:500]
    if exit_code is not None:
        fields["exit_code"] = exit_code
    if status == WorkerStatus.RUNNING:
        fields["started_at"] = Coalesce("started_at", Value(now))
    if status in WORKER_FINAL:
        fields["ended_at"] = now
        fields["started_at"] = Coalesce("started_at", Value(now))
    live = [WorkerStatus.SUBMITTED, WorkerStatus.RUNNING]
    changed = Worker.objects.filter(pk=worker_id, status__in=live).exclude(status=status).update(**fields)
    return bool(changed)
