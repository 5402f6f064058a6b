"""A three-step campaign shaped like Rubin's DP0.2 processing, small enough for tests.

Step 1 runs per visit × detector (20 visits × 9 detectors), one group per visit; step 2 runs per
visit and gathers the 9 detector ids of its visit; step 3 runs per tract × patch × band over a
small sky map (1 tract, 4 patches, 3 bands) and gathers the visits overlapping each patch in its
band, from a static link table. `DP02_OVERLAPS` is that table as data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

VISITS = range(1, 21)
DETECTORS = range(9)
BANDS = {"g": range(1, 8), "r": range(8, 15), "i": range(15, 21)}
# Patch p of tract 0 overlaps the visits whose number modulo 4 is p or p + 1 (mod 4).
DP02_OVERLAPS: list[dict[str, Any]] = [
    {"tract": 0, "patch": p, "band": band, "visit": [v for v in visits if v % 4 in (p, (p + 1) % 4)]}
    for p in range(4)
    for band, visits in BANDS.items()
]


def _links() -> str:
    return "\n".join(
        f"          - {{tract: {r['tract']}, patch: {r['patch']}, band: {r['band']}, visit: {r['visit']}}}"
        for r in DP02_OVERLAPS
    )


DP02_SPEC = (
    """
name: {name}
dimensions: [visit, detector]
pipeline:
  isr: {{command: "run isr --visit {{visit}} --detector {{detector}}", walltime_s: 60}}
  calibrate: {{command: "run calibrate {{data_id}}", parents: [isr], walltime_s: 60}}
  visit_summary: {{command: "run visit-summary --visit {{visit}}", walltime_s: 60}}
  make_warp: {{command: "run make-warp {{tract}} {{patch}} {{band}}", walltime_s: 60}}
  assemble_coadd: {{command: "run coadd {{data_id}}", parents: [make_warp], walltime_s: 60}}
data:
  product: {{visit: {{ranges: [[1, 20]]}}, detector: {{ranges: [[0, 8]]}}}}
steps:
  - name: step1
    labels: [isr, calibrate]
    group_by: [visit]
  - name: step2
    dimensions: [visit]
    labels: [visit_summary]
    group_by: [visit]
    gather: {{step: step1, along: [visit]}}
  - name: step3
    dimensions: [tract, patch, band]
    data:
      product: {{tract: [0], patch: {{ranges: [[0, 3]]}}, band: [g, r, i]}}
    labels: [make_warp, assemble_coadd]
    group_by: [tract, patch]
    gather:
      step: step2
      links:
"""
    + _links().replace("{", "{{").replace("}", "}}")
    + "\n"
)


def dp02_spec_text(
    *, name: str = "dp02", commands: Mapping[str, str] | None = None, step1_extra: str = ""
) -> str:
    """The spec; `commands` replaces labels' commands (placeholders as in the spec), `step1_extra`
    is YAML added to step 1 (e.g. its `cluster` key), indented as step 1's keys."""
    text = DP02_SPEC.format(name=name)
    for label, command in (commands or {}).items():
        text, n = re.subn(
            rf'(\n  {label}: {{command: )"[^"]*"', lambda m, c=command: m[1] + json.dumps(c), text
        )
        assert n == 1, label
    if step1_extra:
        text = text.replace(
            "    group_by: [visit]\n  - name: step2", f"    group_by: [visit]\n{step1_extra}  - name: step2"
        )
    return text
