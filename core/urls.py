from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from core import views

app_name = "core"

urlpatterns: list[URLPattern | URLResolver] = [
    path("login/", views.login, name="login"),
    path("login/failed/", views.login_failed, name="login-failed"),
    path("logout/", views.logout, name="logout"),
    path("oidc/authenticate/", views.OidcAuthenticateView.as_view(), name="oidc-authenticate"),
    path("oidc/callback/", views.OidcCallbackView.as_view(), name="oidc-callback"),
    path("api/v1/whoami/", views.WhoAmIApi.as_view(), name="whoami"),
    path("api/v1/auth/config/", views.AuthConfigApi.as_view(), name="auth-config"),
    # Probes for orchestrators and load balancers (docs/deployment/index.md).
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]
