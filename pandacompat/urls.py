"""URLs of PanDA's clients, mounted at the root: the clients build these exact paths (the v1 API
at the host's /api/v1/ whatever PANDA_URL_SSL's path is; the cache at the host's /cache/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from pandacompat import views, views_jobs, views_tasks
from pandacompat.cache import CACHE_NAME

app_name = "pandacompat"

urlpatterns: list[URLPattern | URLResolver] = [
    path("server/panda/relay_idds_command", views.relay_idds_command, name="relay-idds-command"),
    path("api/v1/system/is_alive", views.is_alive, name="is-alive"),
    path("api/v1/file_server/upload_cache_file", views.upload_cache_file, name="upload-cache-file"),
    path("api/v1/file_server/validate_cache_file", views.validate_cache_file, name="validate-cache-file"),
    # After dispatcher.protocol's /cache/schedconfig/… and /cache/ddmendpoints.json (config/urls.py
    # includes those first); a cache name has no slash, so the two never meet.
    re_path(rf"^cache/(?P<name>{CACHE_NAME})$", views.cache_file_get, name="cache-file"),
    re_path(r"^auth/(?P<vo>[A-Za-z0-9_.-]{1,64})_auth_config\.json$", views.auth_config, name="auth-config"),
    # panda-client's job and task calls (views_jobs, views_tasks).
    path("api/v1/job/submit", views_jobs.job_submit, name="job-submit"),
    path("api/v1/job/get_description", views_jobs.job_get_description, name="job-get-description"),
    path("api/v1/job/kill", views_jobs.job_kill, name="job-kill"),
    path("api/v1/task/submit", views_tasks.task_submit, name="task-submit"),
    path("api/v1/task/kill", views_tasks.task_kill, name="task-kill"),
    path("api/v1/task/finish", views_tasks.task_finish, name="task-finish"),
    path("api/v1/task/retry", views_tasks.task_retry, name="task-retry"),
    path("api/v1/task/pause", views_tasks.task_pause, name="task-pause"),
    path("api/v1/task/resume", views_tasks.task_resume, name="task-resume"),
    path("api/v1/task/get_status", views_tasks.task_get_status, name="task-get-status"),
    path("api/v1/task/get_details", views_tasks.task_get_details, name="task-get-details"),
    path("api/v1/task/get_job_ids", views_tasks.task_get_job_ids, name="task-get-job-ids"),
    path(
        "api/v1/task/get_tasks_detailed_info_since",
        views_tasks.task_get_tasks_detailed_info_since,
        name="task-get-tasks-detailed-info-since",
    ),
]
