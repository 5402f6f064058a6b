"""The project's URLs plus the campaign pages, mounted as the lead will mount them."""

from __future__ import annotations

from django.urls import include, path

from campaigns.urls import page_urlpatterns
from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [path("", include((page_urlpatterns, "campaign_pages"))), *project_urlpatterns]
