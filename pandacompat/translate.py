"""A decoded BPS/iDDS workflow as ailuro's own workflow spec (docs/user-guide/workflows.md).

Pure: plain dataclasses in (`pandacompat.decoding`), a spec dict out, no ORM. The spec is the
explicit form, so it goes through the same parser, validation and caps as any other submission.

1. One label per DomaPanDAWork, named by its task name exactly (`<wf>_<NN>_<label>_<chunk>`):
   ctrl_bps_panda already chunks labels at the size ailuro chunks at (30,000), so each iDDS task
   becomes one ailuro task and the relay's replies can name it as the client submitted it.
2. One job per dependency-map entry. The entry's name is a pseudo input file,
   `<bps job name>+qgraphNodeId:<id>+qgraphId:<id>`: the job is named by the part before the first
   `+` (BPS job names are unique in a workflow) and the `key:value` parts become its data id.
3. The command is the work's executable with `${IN/L}` replaced by the job's pseudo input name,
   as JEDI does per job; `${CTRL_…}` variables are left for the worker's shell.
4. Dependencies `{task, inputname}` become `depends_on` by the parent's pseudo name.
5. Per-task resources go into the label's settings: memory (`task_rss`, MB), cores, walltime
   (`maxWalltime`, s), attempts (`maxAttempt`), priority (`task_priority`), and the queue
   (`task_queue`, else `task_site`) as the label's `sites.include`. The memory-retry step and
   offset and the memory cap (`task_rss_max`) are kept in the label's `retry_policy`.
6. BPS's finalJob (a work triggered by an AndCondition on `is_terminated`) is returned apart in
   `final_jobs`, with its label's settings in `final_labels`; the relay submits them as ailuro
   final jobs (`"final": true`), which run once every other job has ended, whatever the outcome
   (`pandacompat.relay.relay_submit_spec`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pandacompat.decoding import DecodeError, IddsJob, IddsWork, IddsWorkflow

IN_PLACEHOLDER = "${IN/L}"
MAP_FILE_PREFIX = "IDDS_WORKFLOW_ADDITIONAL_STORAGE/"
# ctrl_bps_panda's pseudo input of a finalJob: it names no quantum.
FINAL_PSEUDO_PREFIX = "pure_pseudoinput"


class TranslateError(DecodeError):
    """A decoded workflow that cannot become an ailuro spec (always a 400)."""


@dataclass
class Translation:
    spec: dict[str, Any]
    # Jobs of final works, in the spec's job form (without `final`: the relay marks them), to run
    # after every other job has ended, and their labels' settings (kept out of `spec`, whose labels
    # must all have jobs).
    final_jobs: list[dict[str, Any]] = field(default_factory=list)
    final_labels: dict[str, Any] = field(default_factory=dict)


def pseudo_name_split(pseudo: str) -> tuple[str, dict[str, str]]:
    """`calibrate_1_2+qgraphNodeId:abc+qgraphId:1.2-3` → ("calibrate_1_2", {"qgraphNodeId": "abc",
    "qgraphId": "1.2-3"}); parts without a value are left out."""
    head, *parts = pseudo.split("+")
    data_id: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition(":")
        if sep and key and value:
            data_id[key] = value
    return head, data_id


def step_map_key(map_file: str) -> str:
    """`IDDS_WORKFLOW_ADDITIONAL_STORAGE/<task>` → `<task>`, the key a step stored the map under."""
    return map_file.removeprefix(MAP_FILE_PREFIX)


def workflow_to_spec(
    workflow: IddsWorkflow, *, stored_maps: Mapping[str, Sequence[IddsJob]] | None = None
) -> Translation:
    """The spec of `workflow` (see the module docstring); `stored_maps` resolves the dependency
    maps a workflow submitted in steps left out (task name → jobs)."""
    works = [_with_jobs(work, stored_maps or {}) for work in workflow.works]
    names = {work.task_name for work in works}
    if len(names) != len(works):
        raise TranslateError("two works of the workflow have the same task name")
    # pseudo input name → ailuro job name, over every task (parents may be in any task); each
    # pseudo name is split once, its data id kept for the job's entry.
    job_of: dict[tuple[str, str], str] = {}
    split: list[list[tuple[str, dict[str, str]]]] = []
    for work in works:
        final = work.internal_id in workflow.final_work_ids
        per_work: list[tuple[str, dict[str, str]]] = []
        for job in work.jobs or ():
            head, data_id = pseudo_name_split(job.name)
            name = _job_name(work, job, head, final)
            job_of[(work.task_name, job.name)] = name
            per_work.append((name, data_id))
        split.append(per_work)
    labels: dict[str, Any] = {}
    final_labels: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    final_jobs: list[dict[str, Any]] = []
    for work, per_work in zip(works, split, strict=True):
        final = work.internal_id in workflow.final_work_ids
        settings = _label_settings(work)
        if settings:
            (final_labels if final else labels)[work.task_name] = settings
        task_name, executable = work.task_name, work.executable
        out = final_jobs if final else jobs
        for job, (name, data_id) in zip(work.jobs or (), per_work, strict=True):
            entry: dict[str, Any] = {
                "name": name,
                "label": task_name,
                "command": executable.replace(IN_PLACEHOLDER, job.name),
            }
            if job.dependencies:
                depends = []
                for dep in job.dependencies:
                    parent = job_of.get((dep.task, dep.inputname))
                    if parent is None:
                        _parent_missing(work, job, dep.task, dep.inputname)
                    depends.append(parent)
                entry["depends_on"] = depends
            if data_id:
                entry["data_id"] = data_id
            out.append(entry)
    priorities = [work.priority for work in works if work.priority is not None]
    spec: dict[str, Any] = {"name": workflow.name}
    if priorities:
        spec["priority"] = max(priorities)
    if labels:
        spec["labels"] = labels
    spec["jobs"] = jobs
    return Translation(spec=spec, final_jobs=final_jobs, final_labels=final_labels)


def _with_jobs(work: IddsWork, stored: Mapping[str, Sequence[IddsJob]]) -> IddsWork:
    if work.jobs is not None:
        return work
    key = step_map_key(work.map_file or "")
    if key not in stored:
        raise TranslateError(
            f"task {work.task_name!r} refers to a dependency map sent in a step "
            f"({work.map_file!r}), and no step of this workflow carried it"
        )
    return dataclasses.replace(work, jobs=tuple(stored[key]), map_file=None)


def _job_name(work: IddsWork, job: IddsJob, head: str, final: bool) -> str:
    if head == FINAL_PSEUDO_PREFIX or not head:
        return work.task_name if final else job.name
    return head


def _parent_missing(work: IddsWork, job: IddsJob, task: str, inputname: str) -> NoReturn:
    raise TranslateError(
        f"job {job.name!r} of task {work.task_name!r} depends on {inputname!r} of task {task!r}, "
        "which the workflow does not contain"
    )


def _positive(value: float | None) -> int | None:
    if value is None or value <= 0:
        return None
    return math.ceil(value)


def _label_settings(work: IddsWork) -> dict[str, Any]:
    resources: dict[str, int] = {}
    for key, value in (
        ("memory_mb", _positive(work.rss_mb)),
        ("cores", _positive(work.core_count)),
        ("walltime_s", _positive(work.max_walltime_s)),
    ):
        if value is not None:
            resources[key] = value
    settings: dict[str, Any] = {}
    if resources:
        settings["resources"] = resources
    attempts = _positive(work.max_attempt)
    if attempts is not None:
        settings["max_attempts"] = attempts
    if work.priority is not None:
        settings["priority"] = work.priority
    where = work.queue or work.site
    if where:
        settings["sites"] = {"include": [where]}
    policy: dict[str, int] = {}
    for key, value in (
        ("memory_retry_step_mb", _positive(work.rss_retry_step_mb)),
        ("memory_retry_offset_mb", _positive(work.rss_retry_offset_mb)),
        ("max_memory_mb", _positive(work.rss_max_mb)),
    ):
        if value is not None:
            policy[key] = value
    if policy:
        settings["retry_policy"] = policy
    return settings
