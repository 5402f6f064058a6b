"""Error-message templates: the variable parts of a diag masked so messages group (monitor.md §4).

The same patterns run in Python (here, for tests and single messages) and in PostgreSQL (the
`/errors/` grouping, `queries.template_expression`); they use only syntax both engines read alike:
no alternation, no word boundaries, greedy classes.
"""

from __future__ import annotations

import re

# Order matters: paths before hosts before hex ids before plain numbers.
MASKS: tuple[tuple[str, str], ...] = (
    (r"/[^ :,;'\"()]+", "<path>"),
    (r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+){2,}", "<host>"),
    (r"[0-9a-f]{8,}", "<id>"),
    (r"[0-9]+", "N"),
)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in MASKS)


def message_template(message: str) -> str:
    """`"lost heartbeat from node12.cern.ch after 7200 s"` → `"lost heartbeat from <host> after N s"`."""
    for pattern, repl in _COMPILED:
        message = pattern.sub(repl, message)
    return message


# Operator advice per error family (monitor.md §11: "categories with operator advice").
FAMILY_ADVICE: dict[str, str] = {
    "pilot": "Pilot-side failure (stage-in/out, lost heartbeat, node problem): check the site and the worker node outliers.",
    "exe": "The payload failed: look at the payload log tail and reproduce the job offline.",
    "trans": "Non-zero exit of the payload command: open a sample job and read its log.",
    "ddm": "Data management: input missing or output could not be registered.",
    "jobdispatcher": "The dispatcher gave up on the job (lost heartbeat, timeout): check the queue's pilots.",
    "sup": "Supervisor: killed by the system (walltime or memory limits).",
    "taskbuffer": "Server-side bookkeeping error: report it with the job id.",
}
