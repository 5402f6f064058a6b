"""Relay requests for the tests: the captured ones (transcripts/, decoded bodies of the released
clients' requests, see client_versions.txt) and crafted ones, encoded as the clients send them."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def captured(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (TRANSCRIPTS / name).read_text().splitlines() if line.strip()]


def captured_envelope(name: str, command: str, index: int = 0) -> dict[str, Any]:
    """The decoded relay envelope of the index-th `command` request in a transcript, as it was on
    the wire (the capturing stub added `*_decoded_plain_json` copies for readers; dropped)."""
    found = [
        {k: v for k, v in r["body"]["json"].items() if not k.endswith("_decoded_plain_json")}
        for r in captured(name)
        if r["path"].endswith("relay_idds_command") and r["body"]["json"]["command_name"] == command
    ]
    return copy.deepcopy(found[index])


def submit_args(name: str = "bps_direct_PanDAService.jsonl", index: int = 0) -> list[Any]:
    """The `args` of a captured submit, parsed (`[<Workflow>]`)."""
    return list(json.loads(captured_envelope(name, "submit", index)["args"]))


def envelope(command: str, args: Any = None, kwargs: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"command_name": command, "manager": True}
    if args is not None:
        body["args"] = json.dumps(args)
    if kwargs is not None:
        body["kwargs"] = json.dumps(kwargs)
    return body


def gzip_body(envelope: dict[str, Any]) -> bytes:
    """As panda-client posts with compress_body=True: gzip(JSON), no Content-Encoding."""
    return gzip.compress(json.dumps(envelope).encode())


def idds_zip(value: Any) -> str:
    return "idds_zip:" + base64.b64encode(zlib.compress(json.dumps(value).encode())).decode()


def template(args: list[Any]) -> dict[str, Any]:
    """The WorkflowBase attributes of a submit's args, in place (to edit a captured workflow)."""
    attributes: dict[str, Any] = args[0]["attributes"]["template"]["attributes"]
    return attributes


def works(args: list[Any]) -> dict[str, Any]:
    """The DomaPanDAWork objects of a submit's args by internal id, in place."""
    found: dict[str, Any] = template(args)["_works"]
    return found
