"""REST API routes under /api/v1/ (names `dispatcher:<noun>-<verb>`)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from dispatcher.api import jobs, sites, workflow_actions, workflows

app_name = "dispatcher"

urlpatterns: list[URLPattern | URLResolver] = [
    path("ping/", sites.PingApi.as_view(), name="ping"),
    path("workflows/", workflows.WorkflowListApi.as_view(), name="workflow-list"),
    path("workflows/submit/", workflows.WorkflowSubmitApi.as_view(), name="workflow-submit"),
    path("workflows/<int:workflow_id>/", workflows.WorkflowDetailApi.as_view(), name="workflow-detail"),
    path("workflows/<int:workflow_id>/spec/", workflows.WorkflowSpecApi.as_view(), name="workflow-spec"),
    path(
        "workflows/<int:workflow_id>/report/", workflows.WorkflowReportApi.as_view(), name="workflow-report"
    ),
    path(
        "workflows/<int:workflow_id>/cancel/",
        workflow_actions.WorkflowCancelApi.as_view(),
        name="workflow-cancel",
    ),
    path(
        "workflows/<int:workflow_id>/retry/",
        workflow_actions.WorkflowRetryApi.as_view(),
        name="workflow-retry",
    ),
    path(
        "workflows/<int:workflow_id>/pause/",
        workflow_actions.WorkflowPauseApi.as_view(),
        name="workflow-pause",
    ),
    path(
        "workflows/<int:workflow_id>/resume/",
        workflow_actions.WorkflowResumeApi.as_view(),
        name="workflow-resume",
    ),
    path(
        "workflows/<int:workflow_id>/restart/",
        workflow_actions.WorkflowRestartApi.as_view(),
        name="workflow-restart",
    ),
    path(
        "workflows/<int:workflow_id>/boost-priority/",
        workflow_actions.WorkflowBoostPriorityApi.as_view(),
        name="workflow-boost-priority",
    ),
    path(
        "workflows/<int:workflow_id>/set-memory/",
        workflow_actions.WorkflowSetMemoryApi.as_view(),
        name="workflow-set-memory",
    ),
    path("tasks/", jobs.TaskListApi.as_view(), name="task-list"),
    path("tasks/<int:jeditaskid>/", jobs.TaskDetailApi.as_view(), name="task-detail"),
    path("jobs/", jobs.JobListApi.as_view(), name="job-list"),
    path("jobs/<int:pandaid>/", jobs.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:pandaid>/attempts/", jobs.JobAttemptListApi.as_view(), name="job-attempts"),
    path("jobs/<int:pandaid>/log/", jobs.JobLogApi.as_view(), name="job-log"),
    path("attempts/", jobs.AttemptListApi.as_view(), name="attempt-list"),
    path("sites/", sites.SiteListApi.as_view(), name="site-list"),
    path("sites/<str:name>/", sites.SiteDetailApi.as_view(), name="site-detail"),
    path("queues/", sites.QueueListApi.as_view(), name="queue-list"),
    path("queues/<str:name>/", sites.QueueDetailApi.as_view(), name="queue-detail"),
]
