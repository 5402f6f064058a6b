"""A BPS workflow through the iDDS relay: accepted and queryable, server time and peak RSS.

Usage: python bench/bps_submit.py [--jobs 100000] [--detectors 189] [--db NAME] [--output FILE]

1. Builds the relay `submit` body of a DRP-like BPS workflow of exactly N jobs, in the wire form
   ctrl_bps_panda 30.0.0 sends (the captured submission of tests/pandacompat/transcripts is the
   template of every object): per visit and detector isr → characterizeImage → calibrate, then
   one consolidateVisitSummary per visit gathering its calibrate jobs (a last, partial visit makes
   the count exact; its leftover detectors run isr alone). Each label is cut into DomaPanDAWorks of
   at most 30,000 jobs, named `<wf>_<NN>_<label>_<chunk>`; each job is a dependency-map entry named
   by its pseudo input `<job>+qgraphNodeId:<random UUID>+qgraphId:<id>`, each map an idds_zip
   field; the envelope `{"command_name": "submit", "args": "<JSON>", "kwargs": "<JSON>",
   "manager": true}` is gzip-compressed as panda-client posts it. Plain json/zlib/gzip: no client
   package is imported.
2. Creates (drops first) a scratch PostgreSQL database next to $DATABASE_URL's, migrates it,
   loads the demo queues (embedded/demo/queues.yaml) and takes a user token.
3. Starts gunicorn (1 worker, 1 thread) on loopback with bench/_relay_stages.py, which times the
   relay's stages inside the worker (decode, translate, spec parse, validation, inserts).
4. POSTs the body to `/server/panda/relay_idds_command` as panda-client does (bearer token,
   `Origin: <VO>`, no Content-Encoding): server time is the request's wall time on loopback.
5. Queries it: the relay's `get_requests` when this server answers it, else the REST API
   (`/api/v1/workflows/<id>/` with its tasks and per-task counts, and the per-label report), and
   checks every job is there, each task named as submitted with its jobs counted. Then reads the
   spec back (`/api/v1/workflows/<id>/spec/`, rebuilt from the job and edge rows) and checks
   every job name and every edge (timed apart; skip with --no-spec-check).
6. Reads the worker's peak RSS (VmHWM) and the CPU seconds of the worker and of its PostgreSQL
   backend, and prints one JSON document; target: submit ≤ 10 s of server time.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from base64 import b64encode
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from _common import backend_pids, cpu_seconds, free_port, manage, peak_rss_mb, scratch_database, worker_pid

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPT = ROOT / "tests" / "pandacompat" / "transcripts" / "bps_direct_PanDAService.jsonl"
DATABASE = "ailuro_bench_bps_submit"
CHUNK = 30_000  # ctrl_bps_panda's maxJobsPerTask default
TARGET_S = 10.0
WORKFLOW = "bps_bench"
GRAPH = "1700000000.123-4567"
# label, memory MB, queue (embedded/demo/queues.yaml), walltime s
LABELS = [
    ("isr", 2048, "SLAC_Rubin_Medium", 1800),
    ("characterizeImage", 4096, "SLAC_Rubin_Medium", 1800),
    ("calibrate", 4096, "SLAC_Rubin_Medium", 3600),
    ("consolidateVisitSummary", 12000, "SLAC_Rubin_Himem", 3600),
]


# --- the submission ----------------------------------------------------------------------------


def _captured_submit() -> dict[str, Any]:
    """The relay envelope of the captured submit (the transcript's reader copies dropped)."""
    for line in TRANSCRIPT.read_text().splitlines():
        request = json.loads(line) if line.strip() else None
        if request and request["path"].endswith("relay_idds_command"):
            body = request["body"]["json"]
            if body["command_name"] == "submit":
                return {k: v for k, v in body.items() if not k.endswith("_decoded_plain_json")}
    raise RuntimeError(f"no submit in {TRANSCRIPT}")


def idds_zip(value: Any) -> str:
    """As idds.common.dict_class.DictClass.zip_data: base64(zlib(JSON)) behind a prefix."""
    return "idds_zip:" + b64encode(zlib.compress(json.dumps(value).encode())).decode()


@dataclass
class Submission:
    body: bytes
    inflated_bytes: int  # the gzip body inflated: the envelope, the maps still zipped in it
    maps_bytes: int  # the dependency maps' JSON, inflated from their idds_zip fields
    jobs: int
    edges: int
    visits: int
    # task name → number of jobs, in submission order
    tasks: dict[str, int] = field(default_factory=dict)
    # job name → parent job names (BPS job names, the part before the first "+")
    parents: dict[str, list[str]] = field(default_factory=dict)


def drp_jobs(n_jobs: int, detectors: int) -> tuple[dict[str, list[tuple[str, list[str]]]], int]:
    """Per label, (BPS job name, parent names) of an n_jobs DAG: full visits of `detectors`
    detectors (3 per-detector labels + 1 gather), then one partial visit that makes the count exact."""
    per_visit = 3 * detectors + 1
    visit_detectors = [detectors] * (n_jobs // per_visit)
    left = n_jobs - per_visit * len(visit_detectors)
    isr_only = 0
    if left:
        # a partial visit: k full detectors and its gather, the rest isr alone (pruned downstream)
        k = (left - 1) // 3
        visit_detectors.append(k)
        isr_only = left - 3 * k - (1 if k else 0)
    by_label: dict[str, list[tuple[str, list[str]]]] = {label: [] for label, *_ in LABELS}
    for visit_no, n_det in enumerate(visit_detectors):
        visit = 2024_0000 + visit_no
        for detector in range(n_det):
            previous: list[str] = []
            for label, *_ in LABELS[:3]:
                name = f"{label}_{visit}_{detector}"
                by_label[label].append((name, previous))
                previous = [name]
        if n_det:
            gather = [f"calibrate_{visit}_{d}" for d in range(n_det)]
            by_label[LABELS[3][0]].append((f"{LABELS[3][0]}_{visit}", gather))
    last = 2024_0000 + len(visit_detectors) - 1
    for extra in range(isr_only):
        by_label["isr"].append((f"isr_{last}_{visit_detectors[-1] + extra}", []))
    return by_label, len(visit_detectors)


def submission(n_jobs: int, detectors: int) -> Submission:
    envelope = _captured_submit()
    args = json.loads(envelope["args"])
    base = args[0]["attributes"]["template"]["attributes"]
    captured_works = list(base["_works"].values())
    # the captured calibrate work: a regular (not final) task with a parent task
    template_work = next(w for w in captured_works if w["attributes"]["dependency_tasks"])
    by_label, visits = drp_jobs(n_jobs, detectors)

    pseudo: dict[str, str] = {}
    task_of: dict[str, str] = {}
    works: dict[str, Any] = {}
    out = Submission(body=b"", inflated_bytes=0, maps_bytes=0, jobs=0, edges=0, visits=visits)
    for index, (label, memory_mb, queue, walltime_s) in enumerate(LABELS, start=1):
        entries = by_label[label]
        for name, _ in entries:
            pseudo[name] = f"{name}+qgraphNodeId:{uuid.uuid4()}+qgraphId:{GRAPH}"
        for chunk_no, start in enumerate(range(0, len(entries), CHUNK), start=1):
            task = f"{WORKFLOW}_{index:02d}_{label}_{chunk_no:02d}"
            part = entries[start : start + CHUNK]
            work = copy.deepcopy(template_work)
            attrs = work["attributes"]
            internal_id = uuid.uuid4().hex[:8]
            parent_tasks = sorted({task_of[p] for _, parents in part for p in parents})
            attrs.update(
                {
                    "task_name": task,
                    "orig_task_name": task,
                    "es_label": label,
                    "dependency_tasks": parent_tasks,
                    "task_rss": memory_mb,
                    "task_rss_max": 4 * memory_mb,
                    "task_rss_retry_step": float(memory_mb),
                    "task_queue": queue,
                    "task_site": "SLAC",
                    "maxWalltime": walltime_s,
                    "core_count": 1,
                }
            )
            dependency_map = [
                {
                    "name": pseudo[name],
                    "order_id": order,
                    "dependencies": [{"task": task_of[p], "inputname": pseudo[p]} for p in parents],
                }
                for order, (name, parents) in enumerate(part)
            ]
            attrs["_dependency_map"] = idds_zip(dependency_map)
            out.maps_bytes += len(json.dumps(dependency_map).encode())
            for name, parents in part:
                task_of[name] = task
                out.parents[name] = parents
                out.edges += len(parents)
            works[internal_id] = work
            out.tasks[task] = len(part)
    base["_works"] = works
    base["_conditions"] = {}  # no finalJob: it would add a job (its own benchmark case)
    base["_work_conds"] = {}
    base["_name"] = WORKFLOW
    envelope["args"] = json.dumps(args)
    text = json.dumps(envelope).encode()
    out.body = gzip.compress(text, 6)
    out.inflated_bytes = len(text)
    out.jobs = len(out.parents)
    return out


# --- the server --------------------------------------------------------------------------------


def relay(session: requests.Session, base: str, command: str, **kwargs: Any) -> tuple[float, Any]:
    """(seconds, decoded [ok, result]) of one relay call sent as ctrl_bps_panda sends it."""
    envelope: dict[str, Any] = {"command_name": command, "manager": True}
    if kwargs:
        envelope["kwargs"] = json.dumps(kwargs)
    started = time.perf_counter()
    body = gzip.compress(json.dumps(envelope).encode())
    response = session.post(
        f"{base}/server/panda/relay_idds_command",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def check_relay_rows(rows: Any, sub: Submission) -> str | None:
    """Why the relay's get_requests rows do not show the submission, or None."""
    if not isinstance(rows, list) or not rows:
        return f"get_requests returned {rows!r:.200}"
    named = {
        row.get("transform_name"): row for row in rows if isinstance(row, dict) and row.get("transform_id")
    }
    if set(named) != set(sub.tasks):
        return f"get_requests names tasks {sorted(map(str, named))[:8]}…, submitted {sorted(sub.tasks)[:8]}…"
    wrong = {
        t: named[t].get("output_total_files")
        for t, n in sub.tasks.items()
        if named[t].get("output_total_files") != n
    }
    return f"get_requests counts differ: {wrong}" if wrong else None


def query_rest(session: requests.Session, api: str, workflow_id: int, sub: Submission) -> dict[str, Any]:
    started = time.perf_counter()
    detail = session.get(f"{api}/workflows/{workflow_id}/", timeout=120)
    detail.raise_for_status()
    report = session.get(f"{api}/workflows/{workflow_id}/report/", timeout=120)
    report.raise_for_status()
    elapsed = time.perf_counter() - started
    data, totals = detail.json(), report.json()["total"]
    per_task = {task["label"]: sum(task["counts"].values()) for task in data["tasks"]}
    problems = []
    if per_task != sub.tasks:
        problems.append(f"tasks and their jobs {per_task} differ from those submitted {sub.tasks}")
    if totals["total"] != sub.jobs or totals.get("defined") != sub.jobs:
        problems.append(
            f"report counts {totals['total']} jobs ({totals.get('defined')} defined), submitted {sub.jobs}"
        )
    return {
        "query_s": round(elapsed, 3),
        "query_via": "REST API",
        "tasks": len(per_task),
        "problems": problems,
    }


def spec_readback(session: requests.Session, api: str, workflow_id: int, sub: Submission) -> dict[str, Any]:
    started = time.perf_counter()
    response = session.get(f"{api}/workflows/{workflow_id}/spec/", timeout=300)
    response.raise_for_status()
    spec = response.json()
    elapsed = time.perf_counter() - started
    jobs = {job["name"]: sorted(job.get("depends_on", [])) for job in spec["jobs"]}
    labels = Counter(job["label"] for job in spec["jobs"])
    expected = {name: sorted(parents) for name, parents in sub.parents.items()}
    problems = []
    if jobs != expected:
        missing = set(expected) - set(jobs)
        problems.append(f"spec read back differs: {len(jobs)} jobs, {len(missing)} missing")
    if dict(labels) != sub.tasks:
        problems.append(f"spec read back has jobs per task {dict(labels)}")
    return {
        "spec_readback_s": round(elapsed, 3),
        "edges_read_back": sum(len(p) for p in jobs.values()),
        "problems": problems,
    }


def stage_seconds(path: Path) -> dict[str, float]:
    totals: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            totals[row["stage"]] = totals.get(row["stage"], 0.0) + row["s"]
    return {f"{stage}_s": round(s, 3) for stage, s in totals.items()}


def run(options: argparse.Namespace) -> dict[str, Any]:
    built = time.perf_counter()
    sub = submission(options.jobs, options.detectors)
    build_s = time.perf_counter() - built

    base_url = os.environ.get("DATABASE_URL", "postgres://ailuro:ailuro@127.0.0.1:5432/ailuro")
    if not base_url.startswith("postgres"):
        raise SystemExit("bench/bps_submit.py needs PostgreSQL: set DATABASE_URL=postgres://…")
    url = scratch_database(base_url, options.db)
    admin_url = urlunsplit(urlsplit(base_url)._replace(path="/postgres"))
    stages_file = Path(tempfile.mkstemp(prefix="bps_submit_stages_", suffix=".jsonl")[1])
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AILURO_LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": "memory://",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AILURO_BENCH_STAGES": str(stages_file),
    }
    manage(env, "migrate", "--noinput")
    manage(env, "load_queues", str(ROOT / "embedded" / "demo" / "queues.yaml"))
    token = manage(env, "create_token", "--user", "bench", "--role", "user")

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "-c", str(ROOT / "bench" / "_relay_stages.py"),
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "1", "--timeout", "600",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        api = f"{base}/api/v1"
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token}", "Origin": "Rubin"})
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(f"{api}/ping/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        relay(session, base, "ping")  # warm: the relay's modules imported, the token looked up
        worker = worker_pid(server.pid)
        stages_file.write_text("")
        rss_before = peak_rss_mb(worker)
        backends = backend_pids(admin_url, options.db)
        cpu_before = {pid: cpu_seconds(pid) for pid in [worker, *backends]}
        load_before = os.getloadavg()[0]

        started = time.perf_counter()
        response = session.post(
            f"{base}/server/panda/relay_idds_command",
            data=sub.body,
            headers={"Content-Type": "application/json"},
            timeout=600,
        )
        submit_s = time.perf_counter() - started
        response.raise_for_status()
        ok, workflow_id = response.json()
        if not ok:
            raise RuntimeError(f"the relay refused the submission: {workflow_id}")
        cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
        rss_submit = peak_rss_mb(worker)
        stages = stage_seconds(stages_file)

        relay_s, (relay_ok, rows) = relay(
            session, base, "get_requests", request_id=str(workflow_id), with_detail=True
        )
        problems: list[str] = []
        queried: dict[str, Any]
        if relay_ok:
            queried = {"query_s": round(relay_s, 3), "query_via": "relay get_requests", "problems": []}
            why = check_relay_rows(rows, sub)
            if why:
                queried["problems"].append(why)
        else:
            queried = {"relay_get_requests": rows, **query_rest(session, api, workflow_id, sub)}
        problems += queried.pop("problems")
        readback: dict[str, Any] = {}
        if options.spec_check:
            readback = spec_readback(session, api, workflow_id, sub)
            problems += readback.pop("problems")
            if readback["edges_read_back"] != sub.edges:
                problems.append(f"{readback['edges_read_back']} edges read back, {sub.edges} submitted")
        return {
            "benchmark": "bps_submit",
            "host": platform.node(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "server": "gunicorn, 1 worker, 1 thread; PostgreSQL on the same machine",
            "workflow_id": workflow_id,
            "jobs": sub.jobs,
            "edges": sub.edges,
            "visits": sub.visits,
            "detectors": options.detectors,
            "works": len(sub.tasks),
            "largest_work_jobs": max(sub.tasks.values()),
            "wire_bytes": len(sub.body),
            "inflated_bytes": sub.inflated_bytes,
            "maps_inflated_bytes": sub.maps_bytes,
            "wire_bytes_per_job": round(len(sub.body) / sub.jobs, 1),
            "body_build_s": round(build_s, 2),
            "submit_server_s": round(submit_s, 3),
            "stages": stages,
            "server_cpu_s": round(cpu[worker], 2),
            "postgres_cpu_s": round(sum(v for pid, v in cpu.items() if pid != worker), 2),
            **queried,
            **readback,
            "server_rss_before_mb": round(rss_before, 1),
            "server_peak_rss_submit_mb": round(rss_submit, 1),
            "server_peak_rss_mb": round(peak_rss_mb(worker), 1),
            "target_s": TARGET_S,
            "problems": problems,
            "pass": not problems and submit_s <= TARGET_S,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        stages_file.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--detectors", type=int, default=189, help="detectors per full visit")
    parser.add_argument(
        "--db", default=DATABASE, help="scratch database (created, or dropped and made afresh)"
    )
    parser.add_argument(
        "--no-spec-check", dest="spec_check", action="store_false", help="skip the spec read-back"
    )
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    options = parser.parse_args()
    if options.jobs < 1 or options.detectors < 1:
        parser.error("--jobs and --detectors must be positive")
    result = run(options)
    text = json.dumps(result, indent=2)
    print(text)
    if options.output:
        options.output.write_text(text + "\n")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
