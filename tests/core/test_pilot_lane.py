"""The pilot lane of config.wsgi: the protocol's calls run the security middleware only, and answer
exactly as through the full chain."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.core.handlers.base import BaseHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client

from core.middleware import PilotLaneWSGIHandler
from core.services import token_create
from dispatcher.protocol.auth import pilot_token_cache_clear
from tests.factories import QueueFactory, SiteFactory

pytestmark = pytest.mark.django_db

_HEADERS = (
    "Content-Type",
    "Content-Security-Policy",
    "Permissions-Policy",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
)


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    pilot_token_cache_clear()
    yield
    pilot_token_cache_clear()


@pytest.fixture
def token() -> str:
    QueueFactory(name="LANE_QUEUE", site=SiteFactory(name="LANE_SITE"))
    return token_create(username="lane-pilot", role="pilot", queues=["LANE_QUEUE"])


def _wsgi(
    app: Any, method: str, path: str, body: bytes = b"", **extra: str
) -> tuple[int, dict[str, str], bytes]:
    """One call through the WSGI application, as gunicorn makes it (minus the connection
    recycling of the request signals, which would end the test's transaction)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        **extra,
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(headers)

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = app(environ, start_response)
        content = b"".join(result)
        result.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return seen["status"], seen["headers"], content


def _same_as_full_chain(app: Any, method: str, path: str, body: bytes = b"", **extra: str) -> tuple[int, Any]:
    status, headers, content = _wsgi(app, method, path, body, **extra)
    client_extra = {k: v for k, v in extra.items() if k.startswith("HTTP_")}
    full = Client().generic(method, path, body, content_type="application/json", **client_extra)
    assert status == full.status_code
    assert json.loads(content) == full.json()
    for name in _HEADERS:
        assert headers.get(name) == full.headers.get(name), name
    return status, json.loads(content)


def test_pilot_calls_take_the_lane_and_answer_as_the_full_chain(token: str) -> None:
    app = PilotLaneWSGIHandler()
    lane_calls: list[str] = []
    lane_get_response = app._pilot_handler.get_response

    def spy(request: Any) -> Any:
        lane_calls.append(request.path)
        return lane_get_response(request)

    app._pilot_handler.get_response = spy  # type: ignore[method-assign]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    status, body = _same_as_full_chain(
        app, "POST", "/api/v1/pilot/acquire_jobs", json.dumps({"site_name": "LANE_QUEUE"}).encode(), **auth
    )
    assert (status, body["success"]) == (200, False)  # no jobs: the view ran
    assert _same_as_full_chain(app, "POST", "/api/v1/pilot/update_job", b"{}")[0] == 401
    assert _same_as_full_chain(app, "GET", "/api/v1/pilot/update_job", **auth)[0] == 405
    assert _same_as_full_chain(app, "POST", "/server/panda/updateJob", b"{}", **auth)[0] == 400
    assert lane_calls == [
        "/api/v1/pilot/acquire_jobs",
        "/api/v1/pilot/update_job",
        "/api/v1/pilot/update_job",
        "/server/panda/updateJob",
    ]

    lane_calls.clear()
    _wsgi(app, "GET", "/login/failed/")
    _wsgi(app, "POST", "/api/v1/pilot/append_log", b"{}", **auth)  # pilot-side, but not in the lane
    assert lane_calls == []


def test_the_lane_keeps_the_body_cap_and_https_redirect(token: str, settings: Any) -> None:
    settings.AILURO_BODY_CAPS = {"/": 1024, "/api/v1/pilot/": 100}
    app = PilotLaneWSGIHandler()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    status, body = _same_as_full_chain(app, "POST", "/api/v1/pilot/update_job", b"x" * 500, **auth)
    assert status == 413
    assert body["success"] is False

    settings.SECURE_SSL_REDIRECT = True
    app = PilotLaneWSGIHandler()
    status, headers, _ = _wsgi(app, "POST", "/api/v1/pilot/update_job", b"{}", **auth)
    assert status == 301
    assert headers["Location"] == "https://testserver/api/v1/pilot/update_job"


def test_the_lane_keeps_the_request_id(token: str) -> None:
    app = PilotLaneWSGIHandler()
    status, headers, _ = _wsgi(app, "POST", "/api/v1/pilot/update_job", b"{}", HTTP_X_REQUEST_ID="lane-7c1e")
    assert (status, headers["X-Request-ID"]) == (401, "lane-7c1e")


def test_the_lane_resolves_each_path_once_per_url_configuration(token: str, settings: Any) -> None:
    app = PilotLaneWSGIHandler()
    resolved: list[str] = []
    base_resolve = BaseHandler.resolve_request

    def spy(handler: Any, request: Any) -> Any:
        resolved.append(request.path_info)
        return base_resolve(handler, request)

    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    body = json.dumps({"site_name": "LANE_QUEUE"}).encode()
    with mock.patch.object(BaseHandler, "resolve_request", spy):
        for _ in range(3):
            status, answer = _same_as_full_chain(app, "POST", "/api/v1/pilot/acquire_jobs", body, **auth)
            assert (status, answer["success"]) == (200, False)  # the view ran each time
        assert _same_as_full_chain(app, "POST", "/api/v1/pilot/update_job", b"{}")[0] == 401
        # The lane's once, and the full chain's calls above (the comparison), Django's own, every time.
        assert resolved.count("/api/v1/pilot/acquire_jobs") == 1 + 3
        assert resolved.count("/api/v1/pilot/update_job") == 1 + 1

        # Another URL configuration is resolved anew: a path it does not have is a 404.
        settings.ROOT_URLCONF = "tests.core.urls_without_pilot"
        assert _wsgi(app, "POST", "/api/v1/pilot/acquire_jobs", body, **auth)[0] == 404
        assert resolved[-1] == "/api/v1/pilot/acquire_jobs"
