"""What the client commands share to print: a rich console, coloured state names, and JSON for
`--json`. No Django here (ailuro runs on laptops and worker nodes)."""

from __future__ import annotations

import json
import sys
from typing import Any

STATE_STYLE = {
    "finished": "green",
    "done": "green",
    "accepted": "green",
    "ok": "green",
    "failed": "red",
    "rejected": "red",
    "refused": "red",
    "pruned": "magenta",
    "cancelled": "bright_black",
    "closed": "bright_black",
    "running": "cyan",
    "sent": "cyan",
    "starting": "cyan",
    "holding": "cyan",
    "activated": "yellow",
    "paused": "yellow",
    "blocked": "yellow",
    "defined": "white",
    "draft": "white",
    "waiting": "white",
}


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def state(text: str) -> str:
    style = STATE_STYLE.get(text)
    return f"[{style}]{text}[/]" if style else text


def when(value: Any) -> str:
    """An API timestamp as `YYYY-MM-DD HH:MM:SS` (empty for none)."""
    return str(value or "")[:19].replace("T", " ")
