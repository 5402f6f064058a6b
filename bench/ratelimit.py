"""CPU per pilot call of the rate limit (`core.ratelimit.rate_limit_hit`, the pilot scope at its
configured rate) against a real Redis, as deployed (AILURO_CACHE_URL): every call one pipelined
round trip (the path of the limits below BATCHED_FROM, and the pilot's own before it was counted in
batches) against the pilot's batched counting. Process time per call, in alternating rounds.

    python bench/ratelimit.py [N] [--redis redis://127.0.0.1:6379/15]   # prints one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="?", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="the cache's URL")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["AILURO_CACHE_URL"] = args.redis
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import redis.client
    from django.conf import settings

    from core import ratelimit

    rate = ratelimit.rate_parse(settings.AILURO_RATE_LIMITS["pilot"])
    pipelines = [0]
    execute = redis.client.Pipeline.execute

    def counted(self: Any, *a: Any, **kw: Any) -> Any:
        pipelines[0] += 1
        return execute(self, *a, **kw)

    redis.client.Pipeline.execute = counted  # type: ignore[method-assign]

    def run(batched: bool) -> dict[str, float]:
        identity = f"bench:{uuid.uuid4().hex}"
        ratelimit.BATCHED_FROM = 1000 if batched else rate.count + 1
        for _ in range(200):  # the window opened, the client built
            ratelimit.rate_limit_hit(scope="pilot", identity=identity, rate=rate)
        pipelines[0] = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.calls):
            ratelimit.rate_limit_hit(scope="pilot", identity=identity, rate=rate)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {
            "cpu_us": cpu / args.calls * 1e6,
            "wall_us": wall / args.calls * 1e6,
            "round_trips": pipelines[0],
        }

    rounds: dict[str, list[dict[str, float]]] = {"one_pipeline": [], "batched": []}
    for _ in range(args.rounds):
        rounds["one_pipeline"].append(run(batched=False))
        rounds["batched"].append(run(batched=True))
    result: dict[str, Any] = {
        "benchmark": "rate_limit_hit, pilot scope, Redis",
        "rate": settings.AILURO_RATE_LIMITS["pilot"],
        "redis": args.redis,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    for mode, runs in rounds.items():
        result[mode] = {
            "cpu_us_per_call_median": round(statistics.median(r["cpu_us"] for r in runs), 1),
            "cpu_us_per_call": [round(r["cpu_us"], 1) for r in runs],
            "wall_us_per_call_median": round(statistics.median(r["wall_us"] for r in runs), 1),
            "round_trips": [int(r["round_trips"]) for r in runs],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
