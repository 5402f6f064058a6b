from __future__ import annotations

from django.urls import path

from pandamon.views import dash, errors, jobs, loops, overview, sites, tasks, users, workflows

app_name = "pandamon"

# PanDA's URLs, so operators' bookmarks and habits carry over (monitor.md §1).
urlpatterns = [
    path("", overview.overview, name="overview"),
    path("dash/", dash.dashboard, name="dash"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("job/<int:pandaid>/", jobs.job_detail, name="job"),
    path("job/<int:pandaid>/log/", jobs.job_log_tail, name="job-log"),
    path("job/<int:pandaid>/kill/", jobs.job_kill, name="job-kill"),
    path("job/<int:pandaid>/retry/", jobs.job_retry, name="job-retry"),
    path("tasks/", tasks.task_list, name="tasks"),
    path("task/<int:jeditaskid>/", tasks.task_detail, name="task"),
    path("workflows/", workflows.workflow_list, name="workflows"),
    path("workflow/<int:workflow_id>/", workflows.workflow_detail, name="workflow"),
    path("workflow/<int:workflow_id>/<str:verb>/", workflows.workflow_action, name="workflow-action"),
    path("errors/", errors.error_summary, name="errors"),
    path("sites/", sites.site_list, name="sites"),
    path("site/<str:name>/", sites.site_detail, name="site"),
    path("loops/", loops.loop_list, name="loops"),
    path("users/", users.user_list, name="users"),
    path("user/<str:name>/", users.user_detail, name="user"),
]
