"""`ailuro pilot`: the command line of the pilot (wired into ailuro.cli)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ailuro.protocol import PILOT_RETRY_HORIZON_S


def add_pilot_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pilot = sub.add_parser("pilot", help="run jobs of a queue on this node (the ailuro pilot)")
    pilot.add_argument("--url", required=True, help="server base URL, e.g. https://ailuro.example.org")
    pilot.add_argument("--queue", required=True, help="the queue (PanDA queue) to take jobs from")
    pilot.add_argument("--token-file", type=Path, help="file holding the pilot's API token")
    pilot.add_argument("--lifetime", type=float, default=24 * 3600, help="seconds to keep taking jobs")
    pilot.add_argument("--max-jobs", type=int, default=0, help="stop after N jobs (0: no limit)")
    pilot.add_argument("--heartbeat", type=float, default=60.0, help="seconds between heartbeats")
    pilot.add_argument("--workdir", type=Path, default=Path("ailuro-pilot"), help="where job dirs go")
    pilot.add_argument(
        "--spool",
        type=Path,
        help="the node's spool of undelivered final reports, shared by its pilots "
        "(default: $AILURO_PILOT_SPOOL or /var/tmp/ailuro-pilot-spool-<uid>)",
    )
    pilot.add_argument(
        "--idle-wait", type=float, default=0.0, help="keep asking for work this long before exiting"
    )
    pilot.add_argument(
        "--retries",
        type=int,
        default=0,
        help="attempts of acquire and of a final report before giving up (0: no limit, see --retry-horizon)",
    )
    pilot.add_argument(
        "--retry-horizon",
        type=float,
        default=PILOT_RETRY_HORIZON_S,
        help="seconds to keep retrying while the server is unavailable, and to wait for this pilot's "
        "undelivered final reports before exiting (default: %(default).0f)",
    )
    pilot.add_argument(
        "--retry-cap", type=float, default=60.0, help="longest wait in seconds between two retries"
    )
    pilot.add_argument(
        "--stop-grace",
        type=float,
        default=30.0,
        help="after SIGTERM, seconds to wait for the server to take this pilot's last reports",
    )
    pilot.add_argument("--keep-workdirs", action="store_true", help="keep work dirs of finished jobs")
    pilot.set_defaults(func=cmd_pilot)


def cmd_pilot(args: argparse.Namespace) -> int:
    # Imported here so `ailuro up` and the client commands do not pay for the pilot's modules.
    from ailuro.pilot.client import Retry
    from ailuro.pilot.pilot import Pilot, PilotConfig

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s ailuro-pilot %(levelname)s %(message)s"
    )
    token = args.token_file.read_text().strip() if args.token_file else None
    if args.max_jobs < 0 or args.retries < 0 or args.retry_horizon < 0 or args.stop_grace < 0:
        raise SystemExit("ailuro pilot: --max-jobs, --retries, --retry-horizon and --stop-grace must be >= 0")
    if args.lifetime <= 0 or args.heartbeat <= 0 or args.retry_cap <= 0:
        raise SystemExit("ailuro pilot: --lifetime, --heartbeat and --retry-cap must be > 0")
    config = PilotConfig(
        url=args.url,
        queue=args.queue,
        token=token,
        lifetime_s=args.lifetime,
        max_jobs=args.max_jobs,
        heartbeat_s=args.heartbeat,
        workdir=args.workdir.resolve(),
        spool=args.spool.resolve() if args.spool else None,
        idle_wait_s=args.idle_wait,
        keep_workdirs=args.keep_workdirs,
        retry=Retry(attempts=args.retries, horizon_s=args.retry_horizon, cap_s=args.retry_cap),
        stop_grace_s=args.stop_grace,
    )
    return Pilot(config).run()
