"""Run the loops of DESIGN §6 in the foreground, without Celery.

For the embedded run (`ailuro up` starts it), for operators debugging one loop, and for scripted
checks (`--once`). Periods are the beat schedule's (`config.celery.BEAT_SCHEDULE`); each step takes
the same lease as under Celery, so running this next to Celery workers is harmless.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from config.celery import loop_periods
from dispatcher.loops import LOOPS, loop_run

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the dispatcher loops (brokerage, watcher, rollup, janitor) in the foreground."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run each selected loop once and exit.")
        parser.add_argument(
            "--only", nargs="+", metavar="LOOP", help=f"Run only these loops ({', '.join(LOOPS)})."
        )
        parser.add_argument(
            "--sleep", type=float, default=1.0, help="Seconds between checks for due loops (default 1)."
        )

    def handle(self, *args: Any, once: bool, only: list[str] | None, sleep: float, **options: Any) -> None:
        self._verbosity = int(options.get("verbosity", 1))
        names = only or list(LOOPS)
        unknown = sorted(set(names) - set(LOOPS))
        if unknown:
            raise CommandError(f"unknown loop(s) {', '.join(unknown)}; the loops are {', '.join(LOOPS)}")
        if once:
            for name in names:
                self._step(name)
            return
        periods = loop_periods()
        stop = False

        def _on_signal(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        due = dict.fromkeys(names, 0.0)
        while not stop:
            for name in names:
                if stop or time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + periods.get(name, 5.0)
                # A long-running process: drop a connection the database closed (restart, idle
                # timeout) before each step, as Django does around each request.
                close_old_connections()
                try:
                    self._step(name)
                except Exception:
                    # One failing step (database restarting, a bug in one loop) must not stop the
                    # others; it is logged and retried at its next period.
                    log.exception("loop %s failed", name, extra={"event": "loop.failed", "loop": name})
            time.sleep(sleep)

    def _step(self, name: str) -> None:
        done = loop_run(name=name)
        # Quiet when idle: the embedded run shows this output, and "brokerage: 0" every 5 s is noise.
        if done or self._verbosity > 1:
            self.stdout.write(f"{name}: {'lease held elsewhere' if done is None else done}")
