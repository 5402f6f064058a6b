"""What a PanDA pilot needs to configure itself from ailuro alone (pilot-protocol.md §7, §9):
the queue record (queuedata / schedconfig), the storage endpoints and the payload wrapper. Pure
functions over a Queue; the views serve them.
"""

from __future__ import annotations

from typing import Any

from dispatcher.models import Queue, QueueStatus

# The pilot refuses to start on anything but these (§7.2); brokeroff queues still serve pilots.
_PILOT_STATUS = {
    QueueStatus.ONLINE: "online",
    QueueStatus.BROKEROFF: "online",
    QueueStatus.TEST: "test",
    QueueStatus.OFFLINE: "offline",
}

RUNPAYLOAD = """#!/bin/bash
# ailuro payload wrapper: the PanDA pilot runs `./runpayload.sh <jobPars>`; jobPars is the job's
# command as `bash -c '<command>'`, so this runs it and exits with its exit code.
"$@"
"""

TRF_SCRIPTS = {"runpayload.sh": RUNPAYLOAD}


def storage_endpoint_name(site: str) -> str:
    return f"{site}_LOCAL"


def queuedata(queue: Queue) -> dict[str, Any]:
    """The flat queue dict served at /cache/schedconfig/<queue>.all.json and .json (§7.3).

    `plugin_params["schedconfig"]`, if present, is merged last, so a site can set pilot-side keys
    (catchall, container options, copytools) without a code change.
    """
    site = queue.site.name
    record: dict[str, Any] = {
        "nickname": queue.name,
        "panda_resource": queue.name,
        "atlas_site": site,
        "site": site,
        "state": "ACTIVE",
        "status": _PILOT_STATUS.get(QueueStatus(queue.status), "offline"),
        "type": "production",
        "resource_type": "grid",
        "maxtime": queue.max_walltime_s,
        "maxrss": queue.max_rss_mb,
        "minrss": queue.min_rss_mb,
        "maxwdir": queue.max_disk_mb,
        "corecount": queue.max_cores,
        "timefloor": 0,
        "catchall": "",
        "params": {},
        "container_type": "",
        "container_options": "",
        "is_cvmfs": False,
        "copytools": {"mv": {"setup": ""}},
        "acopytools": {"read_lan": ["mv"], "write_lan": ["mv"], "pl": ["mv"], "default": ["mv"]},
        "astorages": {"pr": [storage_endpoint_name(site)], "pw": [storage_endpoint_name(site)]},
        "aprotocols": {},
        "pilot_walltime_grace": 0,
    }
    extra = queue.plugin_params.get("schedconfig") if isinstance(queue.plugin_params, dict) else None
    if isinstance(extra, dict):
        record.update(extra)
    return record


def ddmendpoints(sites: list[str], *, path: str) -> dict[str, Any]:
    """One local POSIX endpoint per site, for `mv` stage-out with the pilot's --output-dir (§7.4)."""
    result: dict[str, Any] = {}
    for site in sites:
        name = storage_endpoint_name(site)
        protocol = [["file://localhost", 1, path]]
        result[name] = {
            "name": name,
            "site": site,
            "type": "DATADISK",
            "state": "ACTIVE",
            "is_deterministic": True,
            "resource": {"name": name},
            "aprotocols": {"w": protocol, "r": protocol, "a": protocol},
            "rprotocols": {
                "0": {
                    "endpoint": "file://localhost",
                    "path": path,
                    "flavour": "POSIX",
                    "id": 0,
                    "activities": [["w", 1], ["r", 1], ["a", 1]],
                }
            },
            "arprotocols": {},
        }
    return result
