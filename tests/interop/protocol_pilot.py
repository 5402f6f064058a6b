"""A minimal pilot for the interop tests: speaks the v1 pilot protocol over HTTP (no Django), takes
one job, reports starting, then heartbeats `running` every half second until it is killed.

    python protocol_pilot.py BASE_URL TOKEN QUEUE
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any


def call(base: str, token: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310  (the test's own loopback server)
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        return json.load(reply)


def main() -> None:
    base, token, queue = sys.argv[1:4]
    reply = call(base, token, "/api/v1/pilot/acquire_jobs", {"site_name": queue, "node": "wn-test"})
    job = reply["data"]["jobs"][0]
    ident = {"job_id": job["PandaID"], "attempt_nr": job["attemptNr"], "lease": job["lease"]}
    call(base, token, "/api/v1/pilot/update_job", {**ident, "job_status": "starting"})
    while True:
        reply = call(base, token, "/api/v1/pilot/update_job", {**ident, "job_status": "running"})
        print("heartbeat", job["PandaID"], reply["success"], flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
