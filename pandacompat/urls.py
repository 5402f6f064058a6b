"""URLs of PanDA's clients, mounted at the root: the clients build these exact paths (the v1 API
at the host's /api/v1/ whatever PANDA_URL_SSL's path is; the cache at the host's /cache/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from pandacompat import views
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
]
