"""Fold cost per change of the monitor summaries: the filter summary with single dimensions, with
its pairs (decision 0016), and with its day level too (decision 0019), on a database
bench/monitor.py seeded; nothing is kept (each fold in a transaction rolled back).

    python bench/fold_cost.py --db ailuro_bench_twof --jobs 20000

For each fold form in turn, `--rounds` times: VACUUM the job table, the feed and the summaries,
then in one transaction rolled back a set-based UPDATE of `--jobs` jobs to a new state and time
(the change feed's trigger writes a −1 and a +1 change row each) and the fold of those rows
(`rollup_sql.FOLD_JOBS`): with the single dimensions only (per hour), with the pairs (per hour),
and with the pairs per hour and per day.
Prints JSON: the change rows and the median µs per change row of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


_SUMMARIES = ("pandamon_jobsummary", "pandamon_jobfiltersummary", "pandamon_jobfilterdaysummary")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--base-url", default=os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    )
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import database_claim

    base = args.base_url.rsplit("/", 1)[0]
    # Only a benchmark's own database, already seeded (bench/monitor.py): it is not kept anyway.
    if database_claim(f"{base}/postgres", args.db):
        sys.exit(f"{args.db} was empty: seed it first (bench/monitor.py --db {args.db} --seed-only)")
    os.environ["DATABASE_URL"] = f"{base}/{args.db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection, transaction

    from pandamon import rollup_sql

    single = ", ".join(
        f"('{d}', {rollup_sql.filter_dim_value_sql('m', d)})" for d in rollup_sql.FILTER_DIMENSIONS
    )
    folds = {
        "single_dimensions": rollup_sql.FOLD_JOBS_HOURS.replace(
            rollup_sql.filter_explode_values("m"), single
        ),
        "with_pairs": rollup_sql.FOLD_JOBS_HOURS,
        "with_pairs_and_days": rollup_sql.FOLD_JOBS,
    }
    times: dict[str, list[float]] = {name: [] for name in folds}
    changes = 0
    for _ in range(args.rounds):
        for name, sql in folds.items():
            # Each fold on tables without the dead row versions the previous one's rollback left
            # (the same keys' versions, which every later upsert would probe: three rounds in one
            # transaction came out up to three times slower by the last).
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM dispatcher_job, dispatcher_jobchange, {', '.join(_SUMMARIES)}")
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    """UPDATE dispatcher_job SET jobstatus = 'closed', statechangetime = now()
                       WHERE pandaid IN (SELECT pandaid FROM dispatcher_job WHERE jobstatus = 'finished'
                                         ORDER BY pandaid LIMIT %s)""",
                    [args.jobs],
                )
                cursor.execute("SELECT COUNT(*) FROM dispatcher_jobchange")
                changes = cursor.fetchone()[0]
                t = time.perf_counter()
                cursor.execute(sql, [changes])
                times[name].append(time.perf_counter() - t)
                transaction.set_rollback(True)
    print(
        json.dumps(
            {
                "change_rows": changes,
                "us_per_change": {
                    n: round(statistics.median(t) / changes * 1e6, 1) for n, t in times.items()
                },
                "seconds": {n: [round(x, 2) for x in t] for n, t in times.items()},
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
