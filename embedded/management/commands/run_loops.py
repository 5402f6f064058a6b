"""Run the loops in the foreground, without Celery (docs/architecture.md#loops).

For the embedded run (`manage.py up` starts it), for a small site without Celery, for operators
debugging one loop, and for scripted checks (`--once`). The loops, their periods and their steps
are the table of `config/loops.py`, as for Celery beat; each run takes the loop's lease and is
recorded in LoopStatus, so running this next to Celery workers is harmless.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from config.loops import LOOPS, Loop
from core.unavailable import unavailable_dependency

log = logging.getLogger(__name__)

NAMES = [loop.name for loop in LOOPS]


class Command(BaseCommand):
    help = f"Run the loops ({', '.join(NAMES)}) in the foreground, on their periods."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run each selected loop once and exit.")
        parser.add_argument("--only", nargs="+", metavar="LOOP", help="Run only these loops.")
        parser.add_argument(
            "--skip",
            nargs="+",
            metavar="LOOP",
            default=[],
            help="Leave these loops out (the embedded run leaves the provisioner to run_local_pilots).",
        )
        parser.add_argument(
            "--sleep", type=float, default=1.0, help="Seconds between checks for due loops (default 1)."
        )

    def handle(
        self, *args: Any, once: bool, only: list[str] | None, skip: list[str], sleep: float, **options: Any
    ) -> None:
        self._verbosity = int(options.get("verbosity", 1))
        unknown = sorted((set(only or []) | set(skip)) - set(NAMES))
        if unknown:
            raise CommandError(f"unknown loop(s) {', '.join(unknown)}; the loops are {', '.join(NAMES)}")
        loops = [loop for loop in LOOPS if loop.name in (only or NAMES) and loop.name not in skip]
        if once:
            for loop in loops:
                self._run(loop, report=True)
            return
        stop = False

        def _on_signal(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        due = dict.fromkeys(NAMES, 0.0)
        while not stop:
            for loop in loops:
                if stop or time.monotonic() < due[loop.name]:
                    continue
                due[loop.name] = time.monotonic() + loop.period_s
                # A long-running process: drop a connection the database closed (restart, idle
                # timeout) before each run, as Django does around each request.
                close_old_connections()
                try:
                    self._run(loop, report=self._verbosity > 1)
                except Exception as exc:
                    # One failing loop (database restarting, a bug in one step) must not stop the
                    # others; it is logged (and recorded in LoopStatus) and runs again next period.
                    # A dependency that is down is a warning of one line, as for a request: every
                    # loop meets it every period until it is back, and its traceback says nothing.
                    part = unavailable_dependency(exc)
                    if part is not None:
                        log.warning(
                            "loop %s: the %s is unavailable (%s); it runs again in %.0f s",
                            loop.name,
                            part,
                            type(exc).__name__,
                            loop.period_s,
                            extra={"event": "loop.unavailable", "loop": loop.name, "dependency": part},
                        )
                        continue
                    log.exception(
                        "loop %s failed", loop.name, extra={"event": "loop.failed", "loop": loop.name}
                    )
            time.sleep(sleep)

    def _run(self, loop: Loop, *, report: bool) -> None:
        done = loop.run()
        # Each run is logged (one JSON line, `loop.ran`); the plain summary is for `--once` (a
        # scripted check) or `-v 2`. The embedded run sends stdout to the JSON log, where a plain
        # line would be the only one a log shipper cannot parse. Quiet when idle unless `-v 2`.
        if report and (done or self._verbosity > 1):
            self.stdout.write(f"{loop.name}: {'lease held elsewhere' if done is None else done}")
