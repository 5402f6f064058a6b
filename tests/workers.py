"""The suite's parallel workers (pytest-xdist; scripts/test.sh runs `pytest -n N`).

Loaded with `-p tests.workers` (pyproject's addopts), before Django reads its settings, so what it
sets in the environment is what the worker's settings and the servers it starts see:

- each worker gets its own Redis database for the Celery broker (the base database + 1 + its
  number), so one worker's Celery tests never take another's tasks;
- pytest-django already gives each worker its own test database (`test_<name>_gw<N>`);
- the static files are read from a folder of the suite's own that nothing collects into: the
  embedded run (`scripts/up.sh`) collects hashed names and a manifest into `var/static`, and pages
  rendered from that manifest link files the tests' servers do not serve (the tests that run the
  embedded system leave AILURO_STATIC_ROOT out of its environment, so it collects into its own
  data folder).

Tests that share something outside the process (the machine's single-node Slurm, a Redis
database named by number) carry `pytest.mark.xdist_group(...)`, which `--dist loadgroup` runs on
one worker. Installs on first use (`scripts/*.sh install`) run under `install_lock`.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
_MOVED = "AILURO_TEST_WORKER_BROKER"


def worker_number() -> int | None:
    """0, 1, … in a pytest-xdist worker; None when the suite runs in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def _own_broker() -> None:
    number = worker_number()
    url = os.environ.get("CELERY_BROKER_URL", "")
    match = re.fullmatch(r"(rediss?://[^/]*)/(\d+)", url)
    # A pytest a test runs in a subprocess inherits the worker's environment: already moved.
    if number is None or match is None or os.environ.get(_MOVED) == url:
        return
    database = int(match[2]) + 1 + number
    if database > 15:
        raise RuntimeError(
            f"worker gw{number}: Redis database {database} does not exist (0–15); use fewer workers"
        )
    os.environ["CELERY_BROKER_URL"] = os.environ[_MOVED] = f"{match[1]}/{database}"


def broker_redis_url(database: int) -> str:
    """A database of the Celery broker's Redis (its host and port; 127.0.0.1:6379 when the broker
    is not Redis): for the tests that need a Redis of their own beside the broker, such as a shared
    cache."""
    broker = urlsplit(os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
    host = broker.hostname if broker.scheme == "redis" and broker.hostname else "127.0.0.1"
    return f"redis://{host}:{broker.port or 6379}/{database}"


def _own_static_root() -> None:
    os.environ["AILURO_STATIC_ROOT"] = str(ROOT / "var" / "test-static")


@contextmanager
def install_lock(name: str) -> Iterator[None]:
    """One worker at a time installs `name` (the others wait, then find it installed)."""
    locks = ROOT / "var" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_own_broker()
_own_static_root()
