"""OpenAPI descriptions of the bearer authentications, so the schema says which calls need a token
(schemathesis' `ignored_auth` check and API clients read it)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "core.auth.ApiTokenAuthentication"
    name = "bearer"
    priority = 1

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An `ail_…` API token (manage.py create_token) or an OIDC access token.",
        }


class OidcBearerScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "core.auth.OIDCBearerAuthentication"
    name = "oidcBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


ERROR_RESPONSES = {
    "400": "The input is not acceptable; `detail` names the field or the problem.",
    "401": "No valid credential.",
    "403": "The credential's role may not do this.",
    "404": "No such object.",
    "409": "The object is not in a state that allows this.",
    "413": "The request body exceeds this endpoint's limit.",
    "429": "Rate limit of this identity exceeded; see Retry-After.",
    "503": "The identity provider, the database or the broker is unavailable; retry after Retry-After seconds.",
}


def error_responses_hook(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Document the API's one error format (`{"detail": "…"}`) on every operation, for the statuses
    the shared layers can answer with, unless the view documented that status itself."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(
        "Error",
        {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]},
    )
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method == "parameters" or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_RESPONSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return result
