"""Campaign planning benchmark: 1,000,000 data ids into 1,000 groups (target: ≤ 10 s).

Pure planning (normalise + split), no database: `python bench/campaign.py` prints JSON.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns.splitting import data_ids_normalise, split  # noqa: E402


def main() -> None:
    n, groups = 1_000_000, 1_000
    ids = random.sample(range(10 * n), n)
    results = {}
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
    results = {
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
    print(json.dumps(results))


if __name__ == "__main__":
    main()
