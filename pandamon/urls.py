from __future__ import annotations

from django.urls import path, re_path

from pandamon.views import bigpanda, dag, dash, errors, jobs, loops, overview, sites, tasks, users, workflows

app_name = "pandamon"

# PanDA's URLs, so operators' bookmarks and habits carry over (monitor.md §1).
urlpatterns = [
    path("", overview.overview, name="overview"),
    path("dash/", dash.dashboard, name="dash"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("job/<int:pandaid>/", jobs.job_detail, name="job"),
    path("job/<int:pandaid>/dag/", dag.job_neighbourhood, name="job-dag"),
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
    # BigPanDA's link forms (pandamon/views/bigpanda.py): a 302 to the page above, query kept.
    re_path(r"^job/?$", bigpanda.job, name="bigpanda-job"),
    path("jobrelationships/<int:pandaid>/", bigpanda.job_fragment, name="bigpanda-jobrelationships"),
    path("jobstatuslog/<int:pandaid>/", bigpanda.job_fragment, name="bigpanda-jobstatuslog"),
    path("prmonplots/<int:pandaid>/", bigpanda.job_fragment, name="bigpanda-prmonplots"),
    path("filebrowser/", bigpanda.file_browser, name="bigpanda-filebrowser"),
    re_path(r"^task/?$", bigpanda.task, name="bigpanda-task"),
    path("taskchain/", bigpanda.task, name="bigpanda-taskchain"),
    path("taskprofile/<int:jeditaskid>/", bigpanda.task_profile, name="bigpanda-taskprofile"),
    re_path(r"^dash/(?P<view>region|production|analysis|world)/$", bigpanda.dash, name="bigpanda-dash"),
    path("status_summary/", bigpanda.status_summary, name="bigpanda-status-summary"),
    path("wns/<str:queue>/", bigpanda.worker_nodes, name="bigpanda-wns"),
    path("wn/<str:queue>/<str:node>/", bigpanda.worker_nodes, name="bigpanda-wn"),
    path("idds/", bigpanda.idds, name="bigpanda-idds"),
    path("idds/wfprogress/", bigpanda.idds, name="bigpanda-idds-wfprogress"),
    path("idds/daggraph/", bigpanda.idds_dag, name="bigpanda-idds-daggraph"),
    path("campprog/", bigpanda.campaign_progress, name="bigpanda-campprog"),
]
