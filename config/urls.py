from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from campaigns.urls import page_urlpatterns as campaign_page_urlpatterns
from config.metrics import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus (config/metrics.py); nginx keeps it off the public address.
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its initialiser as a script file: the CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Pilot protocol: /server/panda/*, /api/v1/pilot/*, /cache/*, /trf/* (plain views, lean middleware path).
    path("", include("dispatcher.protocol.urls")),
    # Pilot-side extras served by the harvester app (payload log chunks, worker callbacks).
    path("", include("harvester.urls")),
    # PanDA's clients (bps's iDDS relay, panda-client's system calls and file cache), root paths.
    path("", include("pandacompat.urls")),
    # REST API for users and operators (DRF).
    path("api/v1/", include("dispatcher.api.urls")),
    path("api/v1/", include("campaigns.urls")),
    # Login, logout, OIDC callbacks.
    path("", include("core.urls")),
    # Campaign pages (/campaigns/, /campaign/<id>/), then the monitor: PanDA's URLs, so it comes last.
    path("", include((campaign_page_urlpatterns, "campaign_pages"))),
    path("", include("pandamon.urls")),
]

# Django's 500 page, or the 503 of a database or broker that is down when a middleware met it.
handler500 = "core.views.server_error"
