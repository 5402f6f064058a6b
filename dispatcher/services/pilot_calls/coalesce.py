"""Group commit of heartbeats: the heartbeats that concurrent requests of one web process bring
at the same moment are written by ONE heartbeat statement, on the connection of the request that
arrives first (docs/decisions/0014).

Every heartbeat statement pays a fixed cost in PostgreSQL — the round trip, executing the prepared
plan, the commit and its WAL flush — that a statement of several updates pays once. A request
never waits to gather others: the first one in writes at once what is there; those arriving while
a statement runs queue up and go together in the next one (natural batching, as PostgreSQL's own
group commit).

What a caller is told is what was written: `HeartbeatCoalescer.write` returns only after the
statement holding its updates committed, with that statement's rows; when the statement fails,
every caller of it gets the exception (a 503 from the middleware) and none is told it was
written. A crash of the process loses only heartbeats that were not answered yet — the pilot
sends them again — and never a state change that a reply confirmed. A request inside a
transaction (`atomic`) is not coalesced: its heartbeat runs alone on its own connection, so it
commits or rolls back with its caller.

Entries are batched only with entries of the same token queues (the statement fences on one
queue list), never with an entry that updates a job already in the batch (each job once per
statement), and up to `max_updates` updates per statement.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dispatcher.services.pilot_calls.messages import PilotUpdate

# Writes `updates` (each job once, one token's queues) in one statement; returns pandaid -> status
# of the rows it wrote.
Writer = Callable[[Sequence[PilotUpdate], frozenset[str] | None], dict[int, str]]


@dataclass
class _Entry:
    updates: Sequence[PilotUpdate]
    queues: frozenset[str] | None
    done: bool = False
    written: dict[int, str] = field(default_factory=dict)
    error: BaseException | None = None


class HeartbeatCoalescer:
    """The heartbeats of one process's concurrent requests, written together (see the module)."""

    def __init__(self, *, max_updates: int = 1000) -> None:
        self.max_updates = max_updates
        self._cond = threading.Condition()
        self._pending: list[_Entry] = []
        self._busy = False
        # Statements run and updates written, for the benchmark and the tests.
        self.statements = 0
        self.updates = 0

    def write(
        self, updates: Sequence[PilotUpdate], queues: frozenset[str] | None, writer: Writer
    ) -> dict[int, str]:
        """Write `updates` (each job once) with the heartbeats of concurrent callers; returns
        pandaid -> status for those of `updates` that were written. Raises what the statement
        raised."""
        entry = _Entry(updates, queues)
        batch: list[_Entry] = []
        with self._cond:
            self._pending.append(entry)
            while self._busy and not entry.done:
                self._cond.wait()
            if not entry.done:
                self._busy = True  # this caller writes the next statement, its own entry first
                batch = self._take(entry)
        if batch:
            self._flush(batch, writer)
        if entry.error is not None:
            raise entry.error
        return entry.written

    def waiting(self) -> int:
        """Entries queued for the next statement."""
        with self._cond:
            return len(self._pending)

    def _take(self, first: _Entry) -> list[_Entry]:
        """`first` and the pending entries that may share its statement, in arrival order."""
        batch, jobs = [first], {u.pandaid for u in first.updates}
        rest: list[_Entry] = []
        for entry in self._pending:
            if entry is first:
                continue
            ids = {u.pandaid for u in entry.updates}
            if (
                entry.queues != first.queues
                or len(jobs) + len(ids) > self.max_updates
                or not jobs.isdisjoint(ids)
            ):
                rest.append(entry)
                continue
            batch.append(entry)
            jobs |= ids
        self._pending = rest
        return batch

    def _flush(self, batch: list[_Entry], writer: Writer) -> None:
        updates = [u for entry in batch for u in entry.updates]
        try:
            written = writer(updates, batch[0].queues)
        except BaseException as exc:  # every caller of the statement raises it, none is told "written"
            for entry in batch:
                entry.error = exc
        else:
            for entry in batch:
                entry.written = {u.pandaid: written[u.pandaid] for u in entry.updates if u.pandaid in written}
        finally:
            with self._cond:
                for entry in batch:
                    entry.done = True
                self._busy = False
                self.statements += 1
                self.updates += len(updates)
                self._cond.notify_all()


# One per process: the requests of a gunicorn worker's threads share it.
COALESCER = HeartbeatCoalescer()
