from __future__ import annotations

from django.urls import path

from pandamon.views import overview

app_name = "pandamon"

urlpatterns = [
    path("", overview.overview, name="overview"),
]
