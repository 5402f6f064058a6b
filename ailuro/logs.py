"""`ailuro logs`: a job's payload output, printed once or followed while the job runs.

The API answers an attempt's whole stored log (`GET /api/v1/jobs/<pandaid>/log/`, up to the
server's cap, which its last line then states). `--follow` polls the job and its log, prints only
what is new, moves on to the next attempt when the job is retried, and stops when the job is final
(with `--attempt`: when that attempt is over). No Django here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ailuro.config import config_load
from ailuro.http import Client
from ailuro.protocol import FINAL_JOB_STATES


def cmd_logs(args: argparse.Namespace) -> int:
    client = Client(config_load(url=args.url, token_file=args.token_file))
    if args.follow:
        return follow_log(client, args)
    params = {"attemptnr": args.attempt} if args.attempt else None
    answer = client.get(f"jobs/{args.pandaid}/log/", params)
    if args.json:
        sys.stdout.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(answer.get("text", ""))
        if answer.get("text") and not answer["text"].endswith("\n"):
            sys.stdout.write("\n")
    return 0


class LogFollower:
    """What of each attempt's stored log was printed already, so each poll prints only what is
    new."""

    def __init__(self, client: Client, pandaid: int, *, as_json: bool) -> None:
        self.client = client
        self.pandaid = pandaid
        self.as_json = as_json
        self.printed: dict[int, str] = {}

    def show(self, attemptnr: int) -> None:
        text = str(self.client.get(f"jobs/{self.pandaid}/log/", {"attemptnr": attemptnr}).get("text") or "")
        old = self.printed.get(attemptnr, "")
        if text.startswith(old):
            new = text[len(old) :]
        else:  # a chunk arrived late, in the middle: print the log again
            print(f"[ailuro: the log of attempt {attemptnr} changed; printing it again]", file=sys.stderr)
            new = text
        self.printed[attemptnr] = text
        if not new:
            return
        if self.as_json:
            sys.stdout.write(
                json.dumps({"pandaid": self.pandaid, "attemptnr": attemptnr, "text": new}) + "\n"
            )
        else:
            sys.stdout.write(new)
        sys.stdout.flush()


def follow_log(client: Client, args: argparse.Namespace) -> int:
    """Print the payload log as it grows, following retries into the next attempt, until the job
    is final (with --attempt: until that attempt is over)."""
    follower = LogFollower(client, args.pandaid, as_json=args.json)
    current: int | None = None
    try:
        while True:
            # The job first, then its log: a job seen final has sent all its output before.
            job = client.get(f"jobs/{args.pandaid}/")
            latest = int(job["attemptnr"])
            target = args.attempt or latest
            if current is not None and target != current:
                follower.show(current)  # the rest of the attempt that just ended
            if target != current:
                if current is not None:
                    print(f"[ailuro: job {args.pandaid} attempt {target}]", file=sys.stderr)
                current = target
            follower.show(target)
            if job["jobstatus"] in FINAL_JOB_STATES or (args.attempt and latest > args.attempt):
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 130
