"""Pilot protocol URLs, mounted at the root: PanDA pilots and Harvester use these exact paths."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from dispatcher.protocol import views

app_name = "protocol"

urlpatterns: list[URLPattern | URLResolver] = [
    # Legacy API (pilot3 ≤ 3.11, Harvester).
    path("server/panda/getJob", views.legacy_get_job, name="legacy-getjob"),
    path("server/panda/updateJob", views.legacy_update_job, name="legacy-updatejob"),
    path("server/panda/updateJobsInBulk", views.legacy_update_jobs_in_bulk, name="legacy-updatejobsinbulk"),
    path("server/panda/getStatus", views.legacy_get_status, name="legacy-getstatus"),
    path(
        "server/panda/updateWorkerPilotStatus",
        views.legacy_update_worker_pilot_status,
        name="legacy-updateworkerpilotstatus",
    ),
    # v1 API (pilot3 3.14+, ailuro pilot).
    path("api/v1/pilot/acquire_jobs", views.acquire_jobs, name="acquire-jobs"),
    path("api/v1/pilot/update_job", views.update_job, name="update-job"),
    path("api/v1/pilot/update_jobs_bulk", views.update_jobs_bulk, name="update-jobs-bulk"),
    path("api/v1/pilot/get_job_status", views.get_job_status, name="get-job-status"),
    path("api/v1/pilot/update_worker_status", views.update_worker_status, name="update-worker-status"),
    # What the pilot downloads to configure itself.
    re_path(r"^cache/schedconfig/(?P<queue>[^/]+?)(?:\.all)?\.json$", views.schedconfig, name="schedconfig"),
    path("cache/ddmendpoints.json", views.ddm_endpoints, name="ddmendpoints"),
    path("trf/user/<str:name>", views.trf_script, name="trf"),
]
