"""The job database.

PanDA's column names are kept where pilots, operators' habits or monitor URLs depend on them
(`pandaid`, `jeditaskid`, `computingsite`, `jobstatus`, `prodsourcelabel`, `attemptnr`, the error
families); everything new is plain snake_case. Writes go through `dispatcher.services`. One module
per family of tables: sites (where jobs run), work (workflows, tasks, jobs and what hangs off them),
rules (retry rules), counts (per-task state counts, per-queue waiting and in-flight counts), changes
(the change feed) and archive (final workflows' jobs moved out of the live tables).
"""

from dispatcher.models.archive import (
    ArchivedFile,
    ArchivedJob,
    ArchivedJobAttempt,
    ArchivedJobDependency,
    ArchivedJobStatusLog,
)
from dispatcher.models.changes import FailedAttemptChange, JobChange
from dispatcher.models.counts import QueueCount, QueueCountDelta, TaskCount, TaskCountDelta
from dispatcher.models.rules import ErrorFamily, RetryAction, RetryRule
from dispatcher.models.sites import PilotFlavour, Queue, QueueStatus, ResourceType, Site
from dispatcher.models.work import (
    File,
    FileRole,
    Job,
    JobAttempt,
    JobDependency,
    JobStatusLog,
    PayloadLog,
    Task,
    Workflow,
)

__all__ = [
    "ArchivedFile",
    "ArchivedJob",
    "ArchivedJobAttempt",
    "ArchivedJobDependency",
    "ArchivedJobStatusLog",
    "ErrorFamily",
    "FailedAttemptChange",
    "File",
    "FileRole",
    "Job",
    "JobAttempt",
    "JobChange",
    "JobDependency",
    "JobStatusLog",
    "PayloadLog",
    "PilotFlavour",
    "Queue",
    "QueueCount",
    "QueueCountDelta",
    "QueueStatus",
    "ResourceType",
    "RetryAction",
    "RetryRule",
    "Site",
    "Task",
    "TaskCount",
    "TaskCountDelta",
    "Workflow",
]
