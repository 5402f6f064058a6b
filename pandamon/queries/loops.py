"""The loop strip: every loop of the table with its last run, lag, work done and error, and which
ones are stalled (`/loops/`, the dashboard, the strip in every page's header).

One query over `core.LoopStatus`; the loops, their periods and allowed lags come from the loop
table through `settings.AILURO_LOOPS` and are judged by `core.loop_health` — the same judgment as
`/readyz`, so the monitor turns a loop red exactly when readiness names it (decision 0007).
"""

from __future__ import annotations

from typing import Any

from core.loop_health import loop_states


def loop_strip() -> dict[str, Any]:
    """`loops`: one entry per loop in table order (`core.loop_health.LoopState.as_json`);
    `stalled`: the names of the stalled ones, empty when every loop is fresh."""
    states = loop_states()
    return {
        "stalled": [state.name for state in states if state.stalled],
        "loops": [state.as_json() for state in states],
    }
