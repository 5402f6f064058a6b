"""OpenAPI description of the bearer tokens the campaign API accepts (drf-spectacular).

Loaded from CampaignsConfig.ready(). If core grows its own extension for ApiTokenAuthentication,
drop this one: spectacular uses the highest-priority extension per class.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "core.auth.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "ailuro API token (ail_…) or OIDC bearer token",
        }
