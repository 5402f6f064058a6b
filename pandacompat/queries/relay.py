"""Named reads of the iDDS relay: a workflow as the rows iDDS's `get_requests` answers, and the
exit codes of a task's failed jobs as `get_contents_output_ext` answers them.

The enum values are iDDS's own (`idds.common.constants.RequestStatus` / `TransformStatus`); the
client reads only `_name_`, but the dict is the shape `idds.common.utils.json_dumps` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatcher.models import Job, Task, Workflow
from dispatcher.queries import task_state_counts
from dispatcher.states import JobStatus, TaskStatus, WorkflowStatus

# iDDS RequestStatus and TransformStatus share these values (`_sort_order_` is the position in
# the enum, equal to the value for every name used here).
IDDS_STATUS_VALUES: Mapping[str, int] = {
    "New": 0,
    "Transforming": 2,
    "Finished": 3,
    "SubFinished": 4,
    "Failed": 5,
    "Cancelled": 9,
    "Suspended": 12,
}

_STATUS_NAMES: Mapping[str, str] = {
    WorkflowStatus.DONE: "Finished",
    WorkflowStatus.FINISHED: "SubFinished",
    WorkflowStatus.FAILED: "Failed",
    WorkflowStatus.CANCELLED: "Cancelled",
    WorkflowStatus.PAUSED: "Suspended",
    TaskStatus.ABORTED: "Cancelled",
}

# ailuro job state → the iDDS counter it adds to (`output_total_files` is their sum).
_COUNTER_OF: Mapping[str, str] = {
    JobStatus.DEFINED: "new",
    JobStatus.ACTIVATED: "processing",
    JobStatus.SENT: "processing",
    JobStatus.STARTING: "processing",
    JobStatus.RUNNING: "processing",
    JobStatus.HOLDING: "processing",
    JobStatus.FINISHED: "processed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "missing",
    JobStatus.CLOSED: "missing",
    JobStatus.PRUNED: "missing",
}


def idds_status_name(status: str) -> str:
    """The iDDS status name of a workflow or task status (docs/user-guide/coming-from-panda.md)."""
    return _STATUS_NAMES.get(status, "Transforming")


def idds_enum(cls: str, name: str) -> dict[str, Any]:
    value = IDDS_STATUS_VALUES[name]
    return {
        "class": cls,
        "module": "idds.common.constants",
        "attributes": {"_value_": value, "_name_": name, "_sort_order_": value},
    }


def transform_counters(counts: Mapping[str, int]) -> dict[str, int]:
    """iDDS's per-transform file counters from one task's exact job-state counts."""
    sums = dict.fromkeys(("new", "processing", "processed", "failed", "missing"), 0)
    for state, n in counts.items():
        sums[_COUNTER_OF.get(state, "processing")] += n
    return {
        "output_total_files": sum(sums.values()),
        "output_processed_files": sums["processed"],
        "output_processing_files": sums["processing"],
        "output_failed_files": sums["failed"],
        "output_missing_files": sums["missing"],
        # Jobs not released yet are new both as inputs and as outputs: ctrl_bps_panda counts
        # `output_new_files - input_new_files` as running and `input_new_files` as unready.
        "output_new_files": sums["new"],
        "input_new_files": sums["new"],
    }


def request_head(workflow: Workflow) -> dict[str, Any]:
    return {
        "request_id": workflow.pk,
        "workload_id": None,
        "scope": "workflow",
        "name": workflow.name,
        "username": workflow.owner.username,
        "status": idds_enum("RequestStatus", idds_status_name(workflow.status)),
        "errors": None,
        "created_at": workflow.created_at.isoformat() if workflow.created_at else None,
    }


def request_rows(workflow: Workflow, *, with_detail: bool) -> list[dict[str, Any]]:
    """`get_requests` for one workflow: one row without detail; with detail one row per task (in
    jeditaskid order), each the request's columns plus its transform's."""
    head = request_head(workflow)
    if not with_detail:
        return [head]
    tasks = list(
        Task.objects.filter(workflow_id=workflow.pk)
        .order_by("jeditaskid")
        .values("jeditaskid", "label", "status")
    )
    if not tasks:
        return [{**head, "transform_id": None}]
    counts = task_state_counts([t["jeditaskid"] for t in tasks])
    return [
        {
            **head,
            "transform_id": task["jeditaskid"],
            "transform_workload_id": task["jeditaskid"],
            # The relay names each task's label by the iDDS task name (pandacompat.translate).
            "transform_name": task["label"],
            "transform_status": idds_enum("TransformStatus", idds_status_name(task["status"])),
            **transform_counters(counts[task["jeditaskid"]]),
        }
        for task in tasks
    ]


def requests_of_owner(owner_id: int, *, limit: int) -> list[Workflow]:
    """The owner's newest workflows (`get_requests` without a request id)."""
    return list(Workflow.objects.filter(owner_id=owner_id).select_related("owner").order_by("-pk")[:limit])


def task_of_workflow(workflow_id: int, jeditaskid: int) -> bool:
    return Task.objects.filter(workflow_id=workflow_id, pk=jeditaskid).exists()


def failed_job_exits(jeditaskid: int) -> list[dict[str, Any]]:
    """One row per failed job of the task, from its last attempt (the job row keeps the last
    attempt's error columns): what `get_contents_output_ext` answers per content."""
    rows = list(
        Job.objects.filter(task_id=jeditaskid, jobstatus=JobStatus.FAILED)
        .order_by("pandaid")
        .values(
            "pandaid",
            "name",
            "attemptnr",
            "jobstatus",
            "transexitcode",
            "exeerrorcode",
            "exeerrordiag",
            "piloterrorcode",
            "piloterrordiag",
        )
    )
    return [
        {
            "panda_id": row["pandaid"],
            "name": row["name"],
            "attempt_nr": row["attemptnr"],
            "status": row["jobstatus"],
            "trans_exit_code": row["transexitcode"],
            "exe_error_code": row["exeerrorcode"],
            "exe_error_diag": row["exeerrordiag"],
            "pilot_error_code": row["piloterrorcode"],
            "pilot_error_diag": row["piloterrordiag"],
        }
        for row in rows
    ]
