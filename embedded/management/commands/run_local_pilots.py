"""Run the provisioner in a loop (the embedded run starts this with --url of its web server).

By default it serves the queues whose plugin is `local`; `--plugin slurm` (repeatable) takes
others too, so a small site can run the provisioner as one long-lived process instead of Celery
beat. Each round is a run of the `provisioner` loop of `config/loops.py` with this command's
configuration: it takes the loop's lease (so it never runs beside a Celery provisioner) and is
recorded in LoopStatus. SIGTERM / Ctrl-C cancels the workers it manages and exits.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from config.loops import loop_named
from harvester.provisioning import ProvisionerConfig, shutdown_workers


class Command(BaseCommand):
    help = "Keep queues supplied with pilots (local subprocesses by default) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="server URL the pilots talk to")
        parser.add_argument("--plugin", action="append", help="plugins to serve (default: local)")
        parser.add_argument("--queue", action="append", help="only these queues (default: all)")
        parser.add_argument("--period", type=float, default=2.0, help="seconds between rounds")
        parser.add_argument("--once", action="store_true", help="run one round and exit")
        parser.add_argument("--heartbeat", type=float, default=30.0, help="pilots' heartbeat period")
        parser.add_argument(
            "--broker",
            action="store_true",
            help="also run the brokerage loop each round (when no run_loops or Celery runs it)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = ProvisionerConfig(
            url=options["url"].rstrip("/"),
            plugins=frozenset(options["plugin"] or ["local"]),
            queues=frozenset(options["queue"]) if options["queue"] else None,
            pilot_heartbeat_s=options["heartbeat"],
        )
        provisioner = loop_named("provisioner")
        brokerage = loop_named("brokerage")
        if options["once"]:
            done = provisioner.run(config=config)
            self.stdout.write("lease held elsewhere" if done is None else f"{done} action(s)")
            return
        stop = False

        def _on_signal(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        try:
            while not stop:
                if options["broker"]:
                    brokerage.run()
                provisioner.run(config=config)
                deadline = time.monotonic() + options["period"]
                while not stop and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            n = shutdown_workers(config=config)
            self.stdout.write(f"provisioner stopped; {n} worker(s) cancelled")
