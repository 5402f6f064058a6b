from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from harvester import views

app_name = "harvester"

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/pilot/append_log", views.append_log, name="payloadlog-append"),
]
