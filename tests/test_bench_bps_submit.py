"""bench/bps_submit.py's submission is what the relay reads: exactly the jobs asked for, the edges
it counts, works of at most 30,000 jobs named as ctrl_bps_panda names them (decoded and translated
here by the relay's own functions; the benchmark itself needs a gunicorn and is run by hand)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bps_submit import CHUNK, submission  # noqa: E402  (bench/ is a folder of scripts)

from pandacompat.decoding import Budget, body_decode, relay_call_parse, workflow_decode  # noqa: E402
from pandacompat.translate import workflow_to_spec  # noqa: E402


@pytest.mark.parametrize(("jobs", "detectors"), [(1, 189), (4, 189), (200, 5), (1000, 189)])
def test_the_submission_has_exactly_the_jobs_and_edges_it_reports(jobs: int, detectors: int) -> None:
    sub = submission(jobs, detectors)
    budget = Budget(remaining=1 << 28, limit=1 << 28)
    call = relay_call_parse(body_decode(sub.body, budget=budget), max_depth=64)
    assert call.command == "submit"
    assert call.kwargs == {"username": None, "use_dataset_name": False}
    workflow = workflow_decode(call.args, budget=budget, max_depth=64)
    spec = workflow_to_spec(workflow).spec
    assert len(spec["jobs"]) == sub.jobs == jobs
    assert sum(len(job.get("depends_on", [])) for job in spec["jobs"]) == sub.edges
    assert {job["name"]: job.get("depends_on", []) for job in spec["jobs"]} == sub.parents
    assert {work.task_name: len(work.jobs or ()) for work in workflow.works} == sub.tasks
    assert len(gzip.decompress(sub.body)) == sub.inflated_bytes


def test_a_big_label_is_cut_into_works_of_at_most_30000_jobs_named_per_chunk() -> None:
    sub = submission(183_000, 189)  # 60,891 isr jobs: three works
    assert max(sub.tasks.values()) == CHUNK
    assert [t for t in sub.tasks if "_isr_" in t] == [
        "bps_bench_01_isr_01",
        "bps_bench_01_isr_02",
        "bps_bench_01_isr_03",
    ]
    envelope = json.loads(gzip.decompress(sub.body))
    assert set(envelope) == {"command_name", "args", "kwargs", "manager"}
    assert isinstance(envelope["args"], str) and '"_dependency_map": "idds_zip:' in envelope["args"]
