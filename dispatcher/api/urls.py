"""REST API routes under /api/v1/ (names `dispatcher:<noun>-<verb>`)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from dispatcher import api

app_name = "dispatcher"

urlpatterns: list[URLPattern | URLResolver] = [
    path("ping/", api.PingApi.as_view(), name="ping"),
    path("workflows/", api.WorkflowListApi.as_view(), name="workflow-list"),
    path("workflows/submit/", api.WorkflowSubmitApi.as_view(), name="workflow-submit"),
    path("workflows/<int:workflow_id>/", api.WorkflowDetailApi.as_view(), name="workflow-detail"),
    path("workflows/<int:workflow_id>/spec/", api.WorkflowSpecApi.as_view(), name="workflow-spec"),
    path("workflows/<int:workflow_id>/report/", api.WorkflowReportApi.as_view(), name="workflow-report"),
    path("workflows/<int:workflow_id>/cancel/", api.WorkflowCancelApi.as_view(), name="workflow-cancel"),
    path("workflows/<int:workflow_id>/retry/", api.WorkflowRetryApi.as_view(), name="workflow-retry"),
    path("workflows/<int:workflow_id>/pause/", api.WorkflowPauseApi.as_view(), name="workflow-pause"),
    path("workflows/<int:workflow_id>/resume/", api.WorkflowResumeApi.as_view(), name="workflow-resume"),
    path("workflows/<int:workflow_id>/restart/", api.WorkflowRestartApi.as_view(), name="workflow-restart"),
    path(
        "workflows/<int:workflow_id>/boost-priority/",
        api.WorkflowBoostPriorityApi.as_view(),
        name="workflow-boost-priority",
    ),
    path(
        "workflows/<int:workflow_id>/set-memory/",
        api.WorkflowSetMemoryApi.as_view(),
        name="workflow-set-memory",
    ),
    path("tasks/", api.TaskListApi.as_view(), name="task-list"),
    path("tasks/<int:jeditaskid>/", api.TaskDetailApi.as_view(), name="task-detail"),
    path("jobs/", api.JobListApi.as_view(), name="job-list"),
    path("jobs/<int:pandaid>/", api.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:pandaid>/attempts/", api.JobAttemptListApi.as_view(), name="job-attempts"),
    path("jobs/<int:pandaid>/log/", api.JobLogApi.as_view(), name="job-log"),
    path("attempts/", api.AttemptListApi.as_view(), name="attempt-list"),
    path("sites/", api.SiteListApi.as_view(), name="site-list"),
    path("sites/<str:name>/", api.SiteDetailApi.as_view(), name="site-detail"),
    path("queues/", api.QueueListApi.as_view(), name="queue-list"),
    path("queues/<str:name>/", api.QueueDetailApi.as_view(), name="queue-detail"),
]
