"""Campaign URLs. `urlpatterns` is mounted at /api/v1/ (config/urls.py); `page_urlpatterns` holds the
pages /campaigns/ and /campaign/<id>/ for the lead to mount at the site root."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns import api, views

app_name = "campaigns"

urlpatterns: list[URLPattern | URLResolver] = [
    path("campaigns/", api.campaign_list_api, name="campaign-list"),
    path("campaigns/<int:campaign_id>/", api.campaign_detail_api, name="campaign-detail"),
    path("campaigns/<int:campaign_id>/actions/", api.campaign_actions_api, name="campaign-actions"),
    path("campaigns/<int:campaign_id>/dry-run/", api.campaign_dry_run_api, name="campaign-dry-run"),
    path("campaigns/<int:campaign_id>/spec/", api.campaign_spec_api, name="campaign-spec"),
    path("campaigns/<int:campaign_id>/<slug:verb>/", api.campaign_action_api, name="campaign-action"),
    path("campaign-steps/<int:step_id>/<slug:verb>/", api.step_action_api, name="step-action"),
    path("campaign-groups/<int:group_id>/", api.group_detail_api, name="group-detail"),
    path("campaign-groups/<int:group_id>/<slug:verb>/", api.group_action_api, name="group-action"),
]

# Mount in config/urls.py before pandamon: path("", include((page_urlpatterns, "campaign_pages"))).
page_urlpatterns: list[URLPattern | URLResolver] = [
    path("campaigns/", views.campaign_list_page, name="list"),
    path("campaign/<int:campaign_id>/", views.campaign_page, name="campaign"),
    path("campaign/<int:campaign_id>/action/", views.campaign_action_page, name="action"),
    path("campaign/group/<int:group_id>/", views.group_page, name="group"),
]
