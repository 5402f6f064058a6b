"""The `ailuro` command line. Imports nothing from Django: it runs on laptops and worker nodes."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from ailuro import __version__
from ailuro.pilot.cli import add_pilot_parser


def _project_root() -> Path:
    """The server checkout: $AILURO_HOME, else the nearest folder above the cwd with manage.py."""
    home = os.environ.get("AILURO_HOME")
    if home:
        return Path(home)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "manage.py").exists() and (folder / "config").is_dir():
            return folder
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "manage.py").exists():
        return candidate
    raise SystemExit(
        "ailuro up: cannot find the ailuro server checkout; run it from the checkout or set AILURO_HOME"
    )


def cmd_up(args: argparse.Namespace) -> int:
    """Run the embedded system. The server lives in the checkout, so hand over to manage.py."""
    root = _project_root()
    command = [sys.executable, str(root / "manage.py"), "up", "--host", args.host, "--port", str(args.port)]
    if args.no_demo:
        command.append("--no-demo")
    if args.exit_after:
        command += ["--exit-after", str(args.exit_after)]
    # manage.py up owns the shutdown of everything it started: on Ctrl-C the terminal signals the
    # whole foreground group, so here we only wait for it to finish stopping its children.
    child = subprocess.Popen(command, cwd=root)  # noqa: S603  (our interpreter running our manage.py)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ailuro", description="ailuro workload management: client, pilot and embedded run"
    )
    parser.add_argument("--version", action="version", version=f"ailuro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the embedded system (web, loops, local pilots) with a demo workflow")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--no-demo", action="store_true")
    up.add_argument("--exit-after", type=float, default=0, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)
    add_pilot_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
