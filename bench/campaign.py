"""Campaign planning benchmark (target: each plan ≤ 10 s). Pure planning, no database:
`python bench/campaign.py` prints one JSON line per case.

1. `campaign_planning`: 1,000,000 scalar data ids into 1,000 groups (normalise + query split).
2. `campaign_planning_dimensions`: 1,000,000 visit × detector ids (5,000 visits × 200 detectors)
   into one group per visit (`group_by: [visit]`), from a spec `product` and from catalog-shaped
   rows (shuffled lists, checked and sorted as tuples); then the spec path (`spec_parse`,
   `step_groups` for both steps: step 2 per visit, one group each, gathers each visit's 200 detector
   ids and records its upstream group), and the dry run's count of groups × jobs per label (a
   per-id label and a `per: [visit]` label).
3. With `--launch`: `campaign_launch_dimensions`, the same campaign created, dry-run and launched
   (10,000 group rows written) on a scratch database it creates (`ailuro_bench_campaign`, dropped
   and created afresh; bench/_common.py refuses any database a benchmark did not create).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from campaigns.dataids import product_ids, split_group_by, tuples_normalise  # noqa: E402
from campaigns.dry_run import StepGroups, _jobs_per_label, step_groups  # noqa: E402
from campaigns.spec import spec_parse  # noqa: E402
from campaigns.splitting import data_ids_normalise, split  # noqa: E402


def scalar_case() -> dict[str, object]:
    n, groups = 1_000_000, 1_000
    ids = random.sample(range(10 * n), n)
    t0 = time.perf_counter()
    ordered = data_ids_normalise(ids)
    t1 = time.perf_counter()
    plans = split(ordered, {"rule": "query", "max_group_size": n // groups})
    t2 = time.perf_counter()
    bounds = [[p.data_ids[0], p.data_ids[-1]] for p in plans]
    ranges = split(ordered, {"rule": "ranges", "ranges": bounds})
    t3 = time.perf_counter()
    assert len(plans) == groups
    assert sum(len(p.data_ids) for p in plans) == n
    assert [p.data_ids for p in ranges] == [p.data_ids for p in plans]
    return {
        "benchmark": "campaign_planning",
        "data_ids": n,
        "groups": len(plans),
        "normalise_s": round(t1 - t0, 3),
        "split_query_s": round(t2 - t1, 3),
        "plan_total_s": round(t2 - t0, 3),
        "split_ranges_1000_s": round(t3 - t2, 3),
        "target_s": 10,
        "ok": (t2 - t0) <= 10,
    }


SPEC = """
name: bench
dimensions: [visit, detector]
pipeline:
  isr: {{command: "isr {{visit}} {{detector}}"}}
  visit_summary: {{command: "summary {{visit}}"}}
data:
  product: {{visit: {{ranges: [[1, {visits}]]}}, detector: {{ranges: [[0, {last}]]}}}}
steps:
  - {{name: step1, labels: [isr], group_by: [visit]}}
  - {{name: step2, dimensions: [visit], labels: [visit_summary], split: {{rule: query, max_group_size: 1}},
     gather: {{along: [visit]}}}}
"""


def dimensions_case() -> dict[str, object]:
    visits, detectors = 5_000, 200
    dims = ["visit", "detector"]
    product = {"visit": {"ranges": [[1, visits]]}, "detector": {"ranges": [[0, detectors - 1]]}}
    t0 = time.perf_counter()
    ids = product_ids(product, dims)
    t1 = time.perf_counter()
    plans = split_group_by(ids, dims, ["visit"])
    t2 = time.perf_counter()
    rows = [list(i) for i in ids]
    random.shuffle(rows)
    t3 = time.perf_counter()
    from_rows = tuples_normalise(rows, dims)
    row_plans = split_group_by(from_rows, dims, ["visit"])
    t4 = time.perf_counter()
    spec = spec_parse(SPEC.format(visits=visits, last=detectors - 1))
    planned: dict[str, StepGroups] = {}
    for step in spec["steps"]:
        planned[step["name"]] = step_groups(spec, step, ids, planned)
    step2 = planned["step2"]
    t5 = time.perf_counter()
    labels = {
        "isr": {"per": "data_id"},
        "calibrate": {"per": "data_id"},
        "visit_summary": {"per": ["visit"]},
    }
    counts = [_jobs_per_label({"labels": labels}, dims, p.data_ids) for p in plans]
    t6 = time.perf_counter()
    n = visits * detectors
    assert len(ids) == n
    assert len(plans) == visits
    assert all(len(p.data_ids) == detectors for p in plans)
    assert [p.data_ids for p in row_plans] == [p.data_ids for p in plans]
    assert [p.data_ids for p in planned["step1"].plans] == [p.data_ids for p in plans]
    assert len(step2.plans) == visits
    assert step2.edges == n
    assert all(len(u) == 1 for u in step2.upstream.values())
    assert sum(c["isr"] for c in counts) == n
    assert sum(c["visit_summary"] for c in counts) == visits
    plan_s = t2 - t0
    rows_s = t4 - t3
    return {
        "benchmark": "campaign_planning_dimensions",
        "data_ids": n,
        "dimensions": dims,
        "groups": len(plans),
        "product_ids_s": round(t1 - t0, 3),
        "group_by_s": round(t2 - t1, 3),
        "plan_from_product_s": round(plan_s, 3),
        "plan_from_rows_s": round(rows_s, 3),
        "spec_and_both_steps_with_gather_s": round(t5 - t4, 3),
        "dry_run_label_counts_s": round(t6 - t5, 3),
        "target_s": 10,
        "ok": max(plan_s, rows_s) <= 10,
    }


def launch_case() -> dict[str, object]:
    """Create and launch the 5,000 × 200 campaign on the scratch database this process runs on."""
    from django.contrib.auth import get_user_model

    from campaigns.dry_run import campaign_dry_run
    from campaigns.models import Group
    from campaigns.services import campaign_create, campaign_launch

    visits, detectors = 5_000, 200
    text = SPEC.format(visits=visits, last=detectors - 1).replace(
        "name: bench", f"name: bench-{time.time_ns()}"
    )
    owner, _ = get_user_model().objects.get_or_create(username="bench-campaign")
    t0 = time.perf_counter()
    campaign = campaign_create(owner=owner, spec_yaml=text)
    t1 = time.perf_counter()
    dry = campaign_dry_run(spec_parse(text), campaign_id=campaign.pk)
    t2 = time.perf_counter()
    outcome = campaign_launch(campaign_id=campaign.pk, actor="bench")
    t3 = time.perf_counter()
    assert not dry.errors, dry.errors
    assert outcome.message == f"launched: 2 steps, {2 * visits} groups", outcome.message
    assert Group.objects.filter(campaign=campaign, step__name="step2").exclude(upstream=[]).count() == visits
    return {
        "benchmark": "campaign_launch_dimensions",
        "data_ids": visits * detectors,
        "groups": 2 * visits,
        "create_s": round(t1 - t0, 3),
        "dry_run_s": round(t2 - t1, 3),
        "launch_s": round(t3 - t2, 3),
        "target_s": 10,
        "ok": (t3 - t2) <= 10,
    }


SCRATCH = "ailuro_bench_campaign"


def main() -> None:
    if "--launch-here" in sys.argv:
        print(json.dumps(launch_case()))
        return
    print(json.dumps(scalar_case()))
    print(json.dumps(dimensions_case()))
    if "--launch" in sys.argv:
        # A scratch database of our own (bench/_common.py), migrated, then the launch in a child
        # process that runs on it.
        import subprocess

        from _common import ROOT, manage, scratch_database

        base = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
        env = {**os.environ, "DATABASE_URL": scratch_database(base, SCRATCH)}
        manage(env, "migrate", "--noinput")
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "campaign.py"), "--launch-here"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
