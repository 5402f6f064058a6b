"""Error-message templates: the variable parts of a diag masked so messages group (monitor.md §4).

The same pattern runs in Python (here: single messages, and the `/errors/` grouping on SQLite, which
groups raw messages and masks them here) and in PostgreSQL (the error rollups and their live reads,
`sql.template_expression`); it uses only syntax both engines read alike
(classes, greedy repetition, one alternation whose branches share a placeholder), and
tests/pandamon/test_errortext.py checks both engines give the same template.
"""

from __future__ import annotations

import re

# One pattern, one placeholder, as PanDA's task-error clustering does (`*R*`): a path, or any token
# holding a digit (numbers, sizes, durations, hosts such as wn12.cern.ch, hex ids, job_42 dirs).
# One regex pass keeps the SQL cheap (~1.5 µs a row); the placeholder is `*` so a template is
# also a glob filter of the job list (`?piloterrordiag=Lost heartbeat from * after * s`).
MASK_PATTERN = r"/[^ :,;'\"()]+|[A-Za-z0-9._-]*[0-9][A-Za-z0-9._-]*"
MASK = "*"
MASKS: tuple[tuple[str, str], ...] = ((MASK_PATTERN, MASK),)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in MASKS)


def message_template(message: str) -> str:
    """`"lost heartbeat from node12.cern.ch after 7200 s"` → `"lost heartbeat from * after * s"`."""
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
