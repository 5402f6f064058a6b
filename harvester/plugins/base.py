"""The plugin interface: submit a pilot, poll batch ids, cancel batch ids.

A plugin is stateless between calls as far as the provisioner is concerned (batch ids are kept
in Worker rows), so a restarted provisioner keeps managing the workers of the previous one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class PluginError(Exception):
    """The batch system refused or failed a request (the message says which and why)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a plugin needs to start one pilot."""

    worker_id: int
    queue: str
    argv: list[str]  # the pilot command line
    workdir: Path  # the worker's own folder: job script, stdout/stderr, pilot work dirs
    env: dict[str, str] = field(default_factory=dict)
    cores: int = 1
    memory_mb: int = 0  # 0: the batch system's default
    walltime_s: int = 0  # 0: the batch system's default


@dataclass(frozen=True)
class Submitted:
    batch_id: str
    stdout_path: str = ""
    stderr_path: str = ""


@dataclass(frozen=True)
class BatchState:
    """A worker's state as the batch system reports it, mapped onto WorkerStatus values."""

    status: str  # submitted | running | finished | failed | cancelled
    exit_code: int | None = None
    node: str = ""
    diag: str = ""


class Plugin(Protocol):
    name: str

    def submit(self, spec: WorkerSpec) -> Submitted:
        """Start one pilot; raise PluginError when the batch system refuses."""
        ...

    def poll(self, batch_ids: Iterable[str]) -> dict[str, BatchState]:
        """States of the given workers. An id missing from the answer is unknown *this time*
        (not yet visible, or gone); the provisioner decides when unknown means lost."""
        ...

    def cancel(self, batch_ids: Iterable[str]) -> None:
        """Stop the given workers (best effort; already finished ones are ignored)."""
        ...
