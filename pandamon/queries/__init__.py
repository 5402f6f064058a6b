"""Named reads for the monitor pages, by page family, each for its consumer and each with a pinned
query count (tests/pandamon/test_queries.py):

* `jobs` — `/jobs/` facets, chart and keyset pages, `/job/<pandaid>/`;
* `errors` — `/errors/` and a task's top errors;
* `tasks` — `/tasks/`, `/task/<id>/` (facets, job profile);
* `workflows` — `/workflows/`, `/workflow/<id>/` (task graph, job slices);
* `sites` — `/dash/`, `/sites/`, `/site/<name>/`;
* `users` — the overview's latest failures, `/users/`, `/user/<name>/`;
* `loops` — the loop strip (every page's header, `/dash/`, `/loops/`);
* `metrics` — the `ailuro_jobs` gauge of `/metrics` (pandamon/metrics.py);
* `common` — progress and chart buckets.

Counts are exact: they come from the task counters (`dispatcher.queries.task_state_counts`), from
the rollup reads on PostgreSQL (`pandamon.rollups`, decision 0003: per-hour summaries plus live
edges, or the selection scanned live in the same statement when the summaries cannot answer it),
or from plain ORM GROUP BYs, which is what SQLite (the embedded run) uses; never from a truncated
sample aggregated in Python. This package re-exports every read, so `queries.<read>` names it.
"""

from pandamon.queries.common import bucket_unit, progress
from pandamon.queries.errors import (
    _FAMILIES,
    ErrorSummary,
    error_rollup_window,
    errors_summary,
    task_error_groups,
)
from pandamon.queries.jobs import (
    JOB_FACETS,
    JOB_LIST_FIELDS,
    JOB_SORTS,
    JobFacets,
    JobRollupSelection,
    cursor_decode,
    cursor_encode,
    job_attempts,
    job_detail,
    job_files,
    job_log_chunks,
    job_relatives,
    job_rollup_selection,
    job_status_history,
    jobs_facets,
    jobs_page,
    jobs_scan_estimate,
    past_window,
    sorts_narrow,
)
from pandamon.queries.loops import loop_strip
from pandamon.queries.metrics import jobs_by_queue_state
from pandamon.queries.sites import (
    dash_matrix,
    queue_state_counts,
    queues_with_sites,
    site_detail,
    site_job_stats,
    site_workers_by_state,
)
from pandamon.queries.tasks import (
    TaskJobProfile,
    task_detail,
    task_facets,
    task_job_profile,
    task_top_errors,
    tasks_page,
)
from pandamon.queries.users import latest_failures, user_last_activity, user_tasks, users_summary
from pandamon.queries.workflows import (
    workflow_detail,
    workflow_job_slice,
    workflow_task_edges,
    workflow_tasks,
    workflows_page,
)
from pandamon.sql import template_expression

__all__ = [
    "JOB_FACETS",
    "JOB_LIST_FIELDS",
    "JOB_SORTS",
    "_FAMILIES",
    "ErrorSummary",
    "JobFacets",
    "JobRollupSelection",
    "TaskJobProfile",
    "bucket_unit",
    "cursor_decode",
    "cursor_encode",
    "dash_matrix",
    "error_rollup_window",
    "errors_summary",
    "job_attempts",
    "job_detail",
    "job_files",
    "job_log_chunks",
    "job_relatives",
    "job_rollup_selection",
    "job_status_history",
    "jobs_by_queue_state",
    "jobs_facets",
    "jobs_page",
    "jobs_scan_estimate",
    "latest_failures",
    "loop_strip",
    "past_window",
    "progress",
    "queue_state_counts",
    "queues_with_sites",
    "site_detail",
    "site_job_stats",
    "site_workers_by_state",
    "sorts_narrow",
    "task_detail",
    "task_error_groups",
    "task_facets",
    "task_job_profile",
    "task_top_errors",
    "tasks_page",
    "template_expression",
    "user_last_activity",
    "user_tasks",
    "users_summary",
    "workflow_detail",
    "workflow_job_slice",
    "workflow_task_edges",
    "workflow_tasks",
    "workflows_page",
]
