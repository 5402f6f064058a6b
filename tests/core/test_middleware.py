from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.middleware import body_cap_for_path

pytestmark = pytest.mark.django_db


def test_the_longest_matching_prefix_decides_the_cap() -> None:
    caps = {"/": 10, "/api/v1/pilot/": 100, "/api/v1/pilot/logs/": 5}

    assert body_cap_for_path("/anything", caps) == 10
    assert body_cap_for_path("/api/v1/pilot/update_job", caps) == 100
    assert body_cap_for_path("/api/v1/pilot/logs/1", caps) == 5


def test_a_body_over_the_endpoint_cap_is_a_413_before_the_view(settings: Any) -> None:
    settings.AILURO_BODY_CAPS = {"/": 1024, "/login/": 100}

    small_elsewhere = Client().post("/api/v1/whoami/", "x" * 500, content_type="text/plain")
    too_big = Client().post("/login/", "x" * 500, content_type="text/plain")
    five_mb = Client().post(
        "/api/v1/whoami/", b"[" + b"1," * 2_500_000 + b"1]", content_type="application/json"
    )

    assert small_elsewhere.status_code != 413
    assert too_big.status_code == 413
    assert too_big.json() == {"detail": "request body of 500 bytes exceeds the 100-byte limit of /login/"}
    assert five_mb.status_code == 413


def test_a_malformed_content_length_is_a_400() -> None:
    response = Client().generic("POST", "/login/", b"", CONTENT_LENGTH="12abc")

    assert response.status_code == 400
    assert "invalid Content-Length" in response.json()["detail"]


def test_every_response_carries_csp_and_security_headers() -> None:
    response = Client().get("/login/failed/")

    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


def test_api_errors_are_json_even_when_django_answers_first() -> None:
    response = Client().get("/api/v1/no-such-endpoint/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert Client().get("/no-such-page/")["Content-Type"].startswith("text/html")


def test_every_api_operation_documents_the_shared_error_responses() -> None:
    schema = Client().get("/api/schema/?format=json").json()

    whoami = schema["paths"]["/api/v1/whoami/"]["get"]["responses"]
    assert {"200", "400", "401", "403", "404", "413", "429", "503"} <= set(whoami)
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]
