"""Cost of the change-feed triggers (decisions 0003 and 0006) per job write, on the monitor benchmark's
database (`bench/monitor.py` seeds it).

    python bench/monitor_triggers.py [--db ailuro_bench_monitor] [--rows 20000]

In one transaction that is rolled back at the end, on `--rows` existing jobs, one single-row
statement per job (as the dispatcher issues them), timed server-side in a PL/pgSQL loop:

1. a transition (jobstatus and statechangetime change): the row trigger appends −old/+new;
2. a heartbeat (modificationtime and node change): the trigger's WHEN clause skips it;

each with the job update trigger enabled and disabled; prints µs per statement and the difference.
"""

from __future__ import annotations

import argparse
import json
import os

import psycopg

LOOP = """
DO $$
DECLARE
    t0 timestamptz;
    ids bigint[];
    i bigint;
BEGIN
    SELECT array_agg(pandaid) INTO ids FROM (
        SELECT pandaid FROM dispatcher_job WHERE jobstatus = 'finished' ORDER BY pandaid LIMIT {rows}
    ) s;
    t0 := clock_timestamp();
    FOREACH i IN ARRAY ids LOOP
        {statement}
    END LOOP;
    RAISE NOTICE '%', EXTRACT(EPOCH FROM clock_timestamp() - t0);
END $$
"""
STATEMENTS = {
    "transition": (
        "UPDATE dispatcher_job SET jobstatus = 'closed', statechangetime = clock_timestamp() "
        "WHERE pandaid = i;"
    ),
    "heartbeat": (
        "UPDATE dispatcher_job SET modificationtime = clock_timestamp(), modificationhost = 'wn1' "
        "WHERE pandaid = i;"
    ),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="ailuro_bench_monitor")
    p.add_argument("--rows", type=int, default=20_000)
    args = p.parse_args()
    base = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro").rsplit("/", 1)[0]
    result: dict[str, object] = {"rows": args.rows}
    with psycopg.connect(f"{base}/{args.db}") as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        for name, statement in STATEMENTS.items():
            for triggers in ("enabled", "disabled"):
                with conn.transaction(force_rollback=True):
                    if triggers == "disabled":
                        conn.execute(
                            "ALTER TABLE dispatcher_job DISABLE TRIGGER dispatcher_job_change_update"
                        )
                    conn.execute(LOOP.format(rows=args.rows, statement=statement))
                    deltas = conn.execute("SELECT COUNT(*) FROM dispatcher_jobchange").fetchone()
                seconds = float(notices[-1])
                result[f"{name}_{triggers}_us"] = round(seconds / args.rows * 1e6, 1)
                result[f"{name}_{triggers}_deltas"] = deltas[0] if deltas else None
            result[f"{name}_trigger_cost_us"] = round(
                float(result[f"{name}_enabled_us"]) - float(result[f"{name}_disabled_us"]),  # type: ignore[arg-type]
                1,
            )
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
