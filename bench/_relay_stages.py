"""gunicorn configuration of bench/bps_submit.py: times the stages of a relay request in the worker.

Passed with `gunicorn -c bench/_relay_stages.py`. Once the worker has loaded the application,
`post_worker_init` wraps the functions the relay's `submit` goes through (looked up by module
attribute at call time, so the wrappers are what the request calls) and appends one JSON line per
call, `{"stage": …, "s": …}`, to the file named by $AILURO_BENCH_STAGES. Nothing in ailuro is
changed; a wrapper costs two clock reads and a small write per call.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

# (module, attribute, stage name), in the order a submission reaches them.
STAGES = [
    ("pandacompat.views", "body_decode", "body_decode"),
    ("pandacompat.views", "relay_call_parse", "relay_call_parse"),
    ("pandacompat.relay", "workflow_decode", "workflow_decode"),
    ("pandacompat.relay", "workflow_to_spec", "workflow_to_spec"),
    ("pandacompat.relay", "relay_submit_spec", "relay_submit_spec"),
    ("dispatcher.services.submit", "spec_parse", "spec_parse"),
    ("dispatcher.services.submit", "workflow_submit", "workflow_submit"),
    ("dispatcher.services.submit", "workflow_validate", "workflow_validate"),
    ("dispatcher.services.submit", "_tasks_create", "tasks_create"),
    ("dispatcher.services.submit", "jobs_insert", "jobs_insert"),
    ("dispatcher.services.submit", "job_edges_insert", "job_edges_insert"),
]


def _timed(function: Callable[..., Any], stage: str, path: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            with open(path, "a") as out:
                out.write(json.dumps({"stage": stage, "s": elapsed}) + "\n")

    return wrapper


def post_worker_init(worker: Any) -> None:
    import importlib

    path = os.environ["AILURO_BENCH_STAGES"]
    for module_name, attribute, stage in STAGES:
        module = importlib.import_module(module_name)
        setattr(module, attribute, _timed(getattr(module, attribute), stage, path))
