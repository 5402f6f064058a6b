"""The exact reconciliation at the end of bench/production_day.py: the database against the pilots'
own records of what they were given and what they reported."""

from __future__ import annotations

from collections import Counter
from typing import Any


def reconcile(prefix: str, fleet: list[dict[str, Any]], workflows_submitted: int) -> dict[str, Any]:
    """Every job of the bench's workflows (named `prefix`…) in one final state; per job, attempt
    rows = dispatches the clients counted and the job's attemptnr = the last attempt dispatched;
    no (job, attempt) dispatched twice (clients and the status log agree) or reported final twice;
    every final update accepted."""
    from django.db import connection

    from dispatcher.states import JOB_FINAL

    dispatched = Counter(d[0] for r in fleet for d in r["dispatches"])
    last_attempt: dict[int, int] = {}
    pairs = Counter((d[0], d[1]) for r in fleet for d in r["dispatches"])
    for pid, attempt in pairs:
        last_attempt[pid] = max(last_attempt.get(pid, 0), attempt)
    finals = Counter((f[0], f[1]) for r in fleet for f in r["finals"] if f[3])
    refused = [f[:3] for r in fleet for f in r["finals"] if not f[3]]
    kinds = Counter(f[2] for r in fleet for f in r["finals"] if f[3])
    overlapping = _overlaps(fleet)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT j.pandaid, j.jobstatus, j.attemptnr, j.request_memory_mb, j.label,"
            " (SELECT count(*) FROM dispatcher_jobattempt a WHERE a.job_id = j.pandaid)"
            " FROM dispatcher_job j JOIN dispatcher_workflow w ON w.id = j.workflow_id WHERE w.name LIKE %s",
            [prefix + "%"],
        )
        jobs = cur.fetchall()
        cur.execute(
            "SELECT count(*) FROM (SELECT l.job_id, l.attemptnr FROM dispatcher_jobstatuslog l"
            " JOIN dispatcher_job j ON j.pandaid = l.job_id JOIN dispatcher_workflow w ON w.id = j.workflow_id"
            " WHERE w.name LIKE %s AND l.jobstatus = 'sent' GROUP BY 1, 2 HAVING count(*) > 1) s",
            [prefix + "%"],
        )
        sent_twice = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute("SELECT count(*) FROM dispatcher_workflow WHERE name LIKE %s", [prefix + "%"])
        workflows = int(cur.fetchone()[0])  # type: ignore[index]
    ours = {row[0] for row in jobs}
    states = Counter(row[1] for row in jobs)
    not_final = sum(n for s, n in states.items() if s not in JOB_FINAL)
    attempt_mismatch = [
        row[0]
        for row in jobs
        if row[5] != dispatched.get(row[0], 0) or (row[0] in last_attempt and row[2] != last_attempt[row[0]])
    ]
    dispatched_twice = sum(1 for n in pairs.values() if n > 1)
    ended_twice = sum(1 for n in finals.values() if n > 1)
    never_ended = sum(1 for pair in pairs if pair not in finals) - len(refused)
    checks = {
        "every_job_in_one_final_state": not_final == 0,
        "attempt_rows_equal_dispatches": not attempt_mismatch,
        "no_attempt_dispatched_twice": dispatched_twice == 0 and sent_twice == 0,
        "no_attempt_ended_twice": ended_twice == 0,
        "no_job_run_twice_at_once": overlapping == 0,
        "every_final_update_accepted": not refused and never_ended <= 0,
        "every_workflow_stored": workflows == workflows_submitted,
    }
    return {
        "passes": all(checks.values()),
        "checks": checks,
        "workflows": workflows,
        "jobs": len(jobs),
        "job_states": dict(states),
        "dispatches": sum(dispatched.values()),
        "dispatches_of_other_jobs": sum(n for pid, n in dispatched.items() if pid not in ours),
        "final_updates_by_kind": dict(kinds),
        "jobs_retried": sum(1 for row in jobs if row[2] > 1),
        "jobs_memory_raised": sum(1 for row in jobs if row[3] > 2000),
        "children_released_and_run": sum(1 for row in jobs if row[4] != "isr" and row[0] in dispatched),
        "pruned": states.get("pruned", 0),
        "attempt_mismatches": attempt_mismatch[:10],
        "refused_final_updates": refused[:10],
        "sent_twice_in_status_log": sent_twice,
        "jobs_dispatched_while_running": overlapping,
    }


def _overlaps(fleet: list[dict[str, Any]]) -> int:
    """Jobs a client was given again before the attempt it held had ended (by the clients' clocks:
    an attempt's dispatch must come after the final update of the one before)."""
    spans: dict[int, list[tuple[int, float, float]]] = {}
    ended = {(f[0], f[1]): f[4] for r in fleet for f in r["finals"] if f[3]}
    for r in fleet:
        for pid, attempt, t in r["dispatches"]:
            spans.setdefault(pid, []).append((attempt, t, ended.get((pid, attempt), float("inf"))))
    bad = 0
    for runs in spans.values():
        runs.sort()
        if any(nxt[1] < cur[2] for cur, nxt in zip(runs, runs[1:], strict=False)):
            bad += 1
    return bad
