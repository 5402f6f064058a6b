"""JEDI task parameters from prun (`Client.insertTaskParams`) as ailuro's workflow spec. Pure.

Only prun's no-input form is served: `noInput: true` with `nEvents` / `nEventsPerJob` (prun's
`--nJobs N` sends nEvents = N, one event per job). The task becomes one workflow with one label,
hence one ailuro task, of N independent jobs; the jobs' command is built from `jobParameters`
(`pandacompat.rungen`): JEDI's constant fragments are joined (a fragment with `padding: false`
takes no space after it, `__delimiter__` is left out), `${SURL}` becomes this server's URL, and
the runGen arguments become the script the pilot runs. Input datasets (`--inDS`, any `dsName`) need
Rucio and are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pandacompat.rungen import RunGenArgs, RunGenRefused, rungen_parse, runner_command

DELIMITER = "__delimiter__"
MAX_JOB_PARAMETERS = 200
MAX_INT = 2**31 - 1  # the database's integer columns
NO_RUCIO = "input datasets (Rucio) are not supported by this server; use prun without --inDS"
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class TaskParamsInvalid(ValueError):
    """Task parameters this server does not accept; `field` names the parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class TaskPlan:
    spec: dict[str, Any]
    label: str
    sandbox: str | None
    n_jobs: int


def _mentions_datasets(value: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(value, dict):
        return "dsName" in value or any(_mentions_datasets(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_datasets(v, depth + 1) for v in value)
    return False


def _positive_int(params: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise TaskParamsInvalid(f"{key} must be a positive integer below 2**31, got {value!r}", key)
    return value


def job_parameters_text(items: Any) -> str:
    """JEDI's jobParameters list joined into one argument string (constants only; output
    templates are left out: outputs stay in the job's work directory)."""
    if not isinstance(items, list) or not items:
        raise TaskParamsInvalid("jobParameters must be a non-empty list", "jobParameters")
    if len(items) > MAX_JOB_PARAMETERS:
        raise TaskParamsInvalid(f"jobParameters has more than {MAX_JOB_PARAMETERS} items", "jobParameters")
    text = ""
    for i, item in enumerate(items):
        where = f"jobParameters[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise TaskParamsInvalid(f"{where} must be a mapping with a string value", where)
        kind = item.get("type")
        if kind != "constant":
            if kind == "template" and item.get("param_type") == "output":
                continue
            raise TaskParamsInvalid(
                f"{where} is a {kind!r} parameter ({item.get('param_type')!r}); only constants are "
                f"supported ({NO_RUCIO})",
                where,
            )
        if item["value"] == DELIMITER:
            continue
        text += item["value"]
        if item.get("padding", True) is not False:
            text += " "
    return text.strip()


def task_plan(params: Any, *, source_url: str, max_jobs: int) -> TaskPlan:
    """The spec of one prun task (see the module docstring); raises TaskParamsInvalid."""
    if not isinstance(params, dict):
        raise TaskParamsInvalid("task_parameters must be a mapping", "task_parameters")
    if params.get("noInput") is not True or _mentions_datasets(params.get("jobParameters")):
        raise TaskParamsInvalid(f"{NO_RUCIO} (the task needs noInput: true)", "noInput")
    for key in ("inDS", "inputDataset", "dsForIN"):
        if params.get(key):
            raise TaskParamsInvalid(NO_RUCIO, key)
    raw_name = params.get("taskName")
    if not isinstance(raw_name, str) or not raw_name.strip("/ "):
        raise TaskParamsInvalid("taskName must be a non-empty string", "taskName")
    name = raw_name.strip().rstrip("/")[:200]
    n_events = _positive_int(params, "nEvents", 1) or 1
    per_job = _positive_int(params, "nEventsPerJob", 1) or 1
    n_jobs = math.ceil(n_events / per_job)
    if n_jobs > max_jobs:
        raise TaskParamsInvalid(f"the task would make {n_jobs} jobs; the limit is {max_jobs}", "nEvents")
    text = job_parameters_text(params.get("jobParameters")).replace("${SURL}", source_url)
    try:
        args: RunGenArgs = rungen_parse(text)
    except RunGenRefused as exc:
        raise TaskParamsInvalid(f"jobParameters: {exc}", "jobParameters") from None
    command = runner_command(args, source_url=source_url)
    label = _LABEL_CHARS.sub("_", name)[:100]
    settings: dict[str, Any] = {}
    site = params.get("site")
    if site is not None:
        if not isinstance(site, str) or not site or len(site) > 128:
            raise TaskParamsInvalid("site must be a queue or site name", "site")
        settings["sites"] = {"include": [site]}
    resources: dict[str, int] = {}
    for key, target in (("coreCount", "cores"), ("ramCount", "memory_mb"), ("walltime", "walltime_s")):
        value = _positive_int(params, key, None)
        if value is not None:
            resources[target] = value
    if resources:
        settings["resources"] = resources
    attempts = _positive_int(params, "maxAttempt", None)
    if attempts is not None:
        settings["max_attempts"] = attempts
    jobs = [{"name": f"{label}.{i:06d}", "label": label, "command": command} for i in range(1, n_jobs + 1)]
    spec: dict[str, Any] = {"name": name, "jobs": jobs}
    if settings:
        spec["labels"] = {label: settings}
    priority = params.get("taskPriority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not -MAX_INT <= priority <= MAX_INT:
            raise TaskParamsInvalid(f"taskPriority must be an integer, got {priority!r}", "taskPriority")
        spec["priority"] = priority
    return TaskPlan(spec=spec, label=label, sandbox=args.sandbox, n_jobs=n_jobs)
