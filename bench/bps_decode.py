"""What the iDDS relay spends on a big BPS submission before the database: decode and translate.

Usage: python bench/bps_decode.py [--jobs N] [--output FILE]

1. Builds a BPS submission of N jobs in the shape ctrl_bps_panda 30.0.0 sends (the captured
   3-job submission of tests/pandacompat/transcripts as the template): labels isr → calibrate one
   to one, then a gather per visit, chunked into works of at most 30,000 jobs, pseudo input names
   with random qgraphNodeId UUIDs, each work's dependency map as an idds_zip field, the whole
   request gzip-compressed as panda-client posts it.
2. Times, in this process and without a database, each stage the relay runs before the submit
   service: the gzip body (`body_decode`), the envelope (`relay_call_parse`), the object walk and
   the idds_zip fields (`workflow_decode`), the translation (`workflow_to_spec`) and the
   dispatcher's own spec parser (`spec_parse`), with the garbage collector paused as the relay
   view pauses it (`pandacompat.views.gc_paused`).
3. Prints one JSON document: sizes on the wire and inflated, seconds per stage, peak RSS.

The database writes that follow are `workflow_submit`'s, measured by bench/ingest.py.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from dispatcher.workflows import spec_parse  # noqa: E402
from pandacompat.decoding import Budget, body_decode, relay_call_parse, workflow_decode  # noqa: E402
from pandacompat.translate import workflow_to_spec  # noqa: E402
from pandacompat.views import gc_paused  # noqa: E402
from tests.pandacompat.payloads import captured_envelope, idds_zip, submit_args, works  # noqa: E402

CHUNK = 30_000
DETECTORS = 189


def submission(n_jobs: int) -> bytes:
    """gzip(JSON) of a relay `submit` with about n_jobs jobs (isr, calibrate, gather per visit)."""
    args = submit_args()
    template_work = copy.deepcopy(next(iter(works(args).values())))
    per_label = n_jobs * DETECTORS // (2 * DETECTORS + 1)
    visits = max(1, per_label // DETECTORS)
    graph = "1700000000.123-4567"

    def pseudo(name: str) -> str:
        return f"{name}+qgraphNodeId:{uuid.uuid4()}+qgraphId:{graph}"

    isr_names: dict[tuple[int, int], str] = {}
    cal_names: dict[tuple[int, int], str] = {}
    for visit in range(visits):
        for detector in range(DETECTORS):
            isr_names[(visit, detector)] = pseudo(f"isr_{visit}_{detector}")
            cal_names[(visit, detector)] = pseudo(f"calibrate_{visit}_{detector}")
    new_works: dict[str, Any] = {}
    task_of: dict[str, str] = {}

    def add_label(index: int, label: str, entries: list[tuple[str, list[str]]]) -> None:
        for chunk_no, start in enumerate(range(0, len(entries), CHUNK), start=1):
            task = f"bps_bench_{index:02d}_{label}_{chunk_no:02d}"
            work = copy.deepcopy(template_work)
            attrs = work["attributes"]
            attrs["task_name"] = task
            attrs["es_label"] = label
            part = entries[start : start + CHUNK]
            for name, _ in part:
                task_of[name] = task
            attrs["_dependency_map"] = idds_zip(
                [
                    {
                        "name": name,
                        "order_id": order,
                        "dependencies": [{"task": task_of[p], "inputname": p} for p in parents],
                    }
                    for order, (name, parents) in enumerate(part)
                ]
            )
            new_works[uuid.uuid4().hex[:8]] = work

    add_label(1, "isr", [(isr_names[k], []) for k in isr_names])
    add_label(2, "calibrate", [(cal_names[k], [isr_names[k]]) for k in cal_names])
    add_label(
        3,
        "gather",
        [
            (pseudo(f"gather_{visit}"), [cal_names[(visit, d)] for d in range(DETECTORS)])
            for visit in range(visits)
        ],
    )
    template = args[0]["attributes"]["template"]["attributes"]
    template["_works"] = new_works
    template["_conditions"] = {}
    template["_work_conds"] = {}
    template["_name"] = "bps_bench"
    envelope = captured_envelope("bps_direct_PanDAService.jsonl", "submit")
    envelope["args"] = json.dumps(args)
    return gzip.compress(json.dumps(envelope).encode(), 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()

    body = submission(options.jobs)
    budget = Budget(remaining=1 << 30, limit=1 << 30)
    stages: dict[str, float] = {}
    with gc_paused():  # as the relay view runs them
        started = time.perf_counter()
        envelope = body_decode(body, budget=budget)
        stages["body_decode_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        call = relay_call_parse(envelope, max_depth=64)
        stages["relay_call_parse_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        workflow = workflow_decode(call.args, budget=budget, max_depth=64)
        stages["workflow_decode_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        translation = workflow_to_spec(workflow)
        stages["workflow_to_spec_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        parsed = spec_parse(translation.spec, max_jobs=1_000_000, max_edges=10_000_000)
        stages["spec_parse_s"] = time.perf_counter() - mark
        total = time.perf_counter() - started
    result = {
        "benchmark": "bps_decode",
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "jobs": len(parsed.jobs),
        "works": len(workflow.works),
        "edges": sum(len(job.parents) for job in parsed.jobs),
        "wire_bytes": len(body),
        "inflated_bytes": budget.limit - budget.remaining,
        **{k: round(v, 3) for k, v in stages.items()},
        "total_s": round(total, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if options.output:
        options.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
