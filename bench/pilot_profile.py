"""Where a per-call pilot update spends its CPU: an in-process loop (no network, no gunicorn) over the
layers of `update_job`, for the first "running" update of a job (sent -> running, a state change)
and for the plain heartbeat that follows (running -> running, no state change).

    python bench/pilot_profile.py [--calls 3000] [--pg postgres://…:5432] [--db ailuro_bench_profile]
                                  [--cprofile 2000]

Each kind is called `--calls` times at each entry point; successive entry points add one layer:

1. sql: the heartbeat statement alone (`fetch_prepared` with the statement's parameters: psycopg,
   the prepared statement, the commit of autocommit);
2. service: `job_pilot_update` (the update's routing, reply types);
3. protocol: `pilot.update` (typing the decoded parameters into a PilotUpdate, counters);
4. view: a WSGIRequest built from the environ, then the `update_job` view (authentication from the
   token cache, the rate limit, JSON decoding, the JSON reply, the latency histogram);
5. wsgi: `config.wsgi.application(environ, start_response)` (Django's request cycle: signals, URL
   resolution, the pilot lane's middleware, the response iterated and closed).

Per entry point: CPU µs per call of this process (time.process_time) and of its PostgreSQL backend
(/proc/<pid>/stat of pg_backend_pid()). What gunicorn adds on top is the bench/dispatch.py server
CPU per call minus the wsgi figure here. Then the statement's EXPLAIN ANALYZE (executor time of the
generic plan, rolled back) per kind, and with --cprofile N the top functions of N wsgi calls of the
plain heartbeat (cProfile; its own overhead inflates the totals, read it for proportions).
Prints one JSON document (also var/bench/pilot_profile.json).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import cpu_seconds, database_claim, report_write
from _pilots import update_body
from dispatch import QUEUE, _django, _seed

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("sql", "service", "protocol", "view", "wsgi")


def _environ(token: str, body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/pilot/update_job",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ACCEPT": "application/json",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _callers(token: str) -> dict[str, Callable[[list[Any], str], Any]]:
    """One function per entry point: call it with a job [pandaid, attemptNr, lease] and a state."""
    from django.core.handlers.wsgi import WSGIRequest
    from django.utils import timezone

    from config.wsgi import application
    from dispatcher.protocol import pilot, views
    from dispatcher.protocol.auth import pilot_authenticate
    from dispatcher.services.pilot_calls import job_pilot_update
    from dispatcher.services.pilot_calls.heartbeat import heartbeat_statement
    from dispatcher.services.prepared import fetch_prepared

    probe = WSGIRequest(_environ(token, b"{}"))
    identity = pilot_authenticate(probe)

    def body(job: list[Any], state: str) -> dict[str, Any]:
        return update_body(job, state, QUEUE)

    def sql(job: list[Any], state: str) -> Any:
        update = pilot.pilot_update(body(job, state))  # typing is not part of this layer's time
        return lambda: fetch_prepared(*heartbeat_statement([update], identity.queues, now=timezone.now()))

    def service(job: list[Any], state: str) -> Any:
        update = pilot.pilot_update(body(job, state))
        return lambda: job_pilot_update(update=update, queues=identity.queues)

    def protocol(job: list[Any], state: str) -> Any:
        params = body(job, state)
        return lambda: pilot.update(params, identity)

    def view(job: list[Any], state: str) -> Any:
        raw = json.dumps(body(job, state)).encode()
        return lambda: views.update_job(WSGIRequest(_environ(token, raw)))

    def wsgi(job: list[Any], state: str) -> Any:
        raw = json.dumps(body(job, state)).encode()

        def call() -> bytes:
            result = application(_environ(token, raw), lambda status, headers: None)
            try:
                return b"".join(result)
            finally:
                result.close()  # request_finished, as a WSGI server does

        return call

    return {"sql": sql, "service": service, "protocol": protocol, "view": view, "wsgi": wsgi}


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _measure(calls: list[Callable[[], Any]]) -> dict[str, float]:
    """CPU µs per call of this process and of the database backend over `calls`."""
    pid = _backend_pid()
    cpu0, pg0, wall0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
    for call in calls:
        call()
    wall, cpu, pg = time.perf_counter() - wall0, time.process_time() - cpu0, cpu_seconds(pid) - pg0
    if _backend_pid() != pid:
        raise SystemExit("the database connection changed during a loop: CPU of the backend unknown")
    n = len(calls)
    return {
        "python_us": round(1e6 * cpu / n, 1),
        "postgres_us": round(1e6 * pg / n, 1),
        "wall_us": round(1e6 * wall / n, 1),
    }


def _dispatched(n: int) -> Iterator[list[Any]]:
    from dispatcher.services.pilot_calls import DispatchRequest, jobs_dispatch

    while n > 0:
        jobs = jobs_dispatch(request=DispatchRequest(queue=QUEUE, n_jobs=min(n, 1000)))
        if not jobs:
            raise SystemExit("ran out of activated jobs: raise --jobs")
        n -= len(jobs)
        yield from ([j["pandaid"], j["attemptnr"], j["lease"]] for j in jobs)


def _explain(job: list[Any], state: str) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the heartbeat statement for `job` (generic plan), rolled back."""
    import psycopg
    from django.db import connection, transaction
    from django.utils import timezone

    from dispatcher.protocol import pilot
    from dispatcher.services.pilot_calls.heartbeat import heartbeat_statement

    sql, params = heartbeat_statement(
        [pilot.pilot_update(update_body(job, state, QUEUE))], None, now=timezone.now()
    )
    with transaction.atomic():
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0][0]
        transaction.set_rollback(True)
    return {
        "planning_ms": plan.get("Planning Time"),
        "execution_ms": plan.get("Execution Time"),
        "triggers": [{t["Trigger Name"]: t["Time"]} for t in plan.get("Triggers", [])],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_claim(f"{args.pg}/postgres", args.db)
    _django(f"{args.pg}/{args.db}")
    os.environ["AILURO_PILOT_AUTH"] = "token"
    token = _seed(args.jobs)
    from django.db import connection

    callers = _callers(token)
    n = args.calls
    fresh = _dispatched(n * len(LAYERS) + 200)
    # Warm-up: prepare the statement and fill the token cache on this connection.
    warm = [next(fresh) for _ in range(100)]
    for job in warm:
        callers["wsgi"](job, "running")()
        callers["wsgi"](job, "running")()
    report: dict[str, Any] = {"benchmark": "pilot_profile", "calls": n, "kinds": {}}
    running_jobs: list[list[Any]] = []
    for kind in ("running", "plain"):
        rows: dict[str, Any] = {}
        for layer in LAYERS:
            jobs = [next(fresh) for _ in range(n)] if kind == "running" else running_jobs[:n]
            calls = [callers[layer](job, "running") for job in jobs]
            rows[layer] = _measure(calls)
            if kind == "running":
                running_jobs += jobs
        prev = {"python_us": 0.0, "postgres_us": 0.0}
        for layer in LAYERS:
            rows[layer]["layer_python_us"] = round(rows[layer]["python_us"] - prev["python_us"], 1)
            prev = rows[layer]
        rows["explain"] = _explain(next(fresh) if kind == "running" else running_jobs[0], "running")
        report["kinds"][kind] = rows
    if args.cprofile:
        calls = [callers["wsgi"](job, "running") for job in running_jobs[: args.cprofile]]
        profile = cProfile.Profile()
        profile.enable()
        for call in calls:
            call()
        profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        dump = Path(args.out).with_suffix(".pstats")
        dump.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(dump))
        report["cprofile_tottime"] = out.getvalue().splitlines()
    connection.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument(
        "--cprofile", type=int, default=0, help="wsgi calls of the plain heartbeat to profile"
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://ailuro:ailuro@127.0.0.1:5432"))
    parser.add_argument("--db", default="ailuro_bench_profile")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "pilot_profile.json"))
    args = parser.parse_args()
    report = run(args)
    report_write(report, args.out)


if __name__ == "__main__":
    main()
