from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.test.client import ClientHandler

from core.middleware import PilotLaneMixin
from core.services import token_create
from dispatcher.models import Queue
from dispatcher.protocol.auth import pilot_token_cache_clear
from dispatcher.states import JobStatus
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    pilot_token_cache_clear()
    yield
    pilot_token_cache_clear()


@pytest.fixture
def queue(db: None) -> Queue:
    return QueueFactory(name="STUB_QUEUE", site=SiteFactory(name="STUB_SITE"), max_rss_mb=4000, max_cores=8)


@pytest.fixture
def token(queue: Queue) -> str:
    return token_create(username="pilot-fleet", role="pilot", queues=[queue.name])


class LaneClientHandler(PilotLaneMixin, ClientHandler):
    """The test client's handler with the pilot lane of config.wsgi (lean middleware chain)."""


class Pilot:
    """A test client speaking the protocol in any of its encodings, with a pilot token; its calls
    take the pilot lane of the production WSGI handler."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.client.handler = LaneClientHandler()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def gzip_json(self, path: str, params: dict[str, Any]) -> Any:
        body = gzip.compress(json.dumps(params).encode())
        return self.client.post(path, body, content_type="application/json", **self.headers)

    def form(self, path: str, params: dict[str, Any]) -> Any:
        return self.client.generic(
            "POST",
            path,
            urlencode({k: str(v) for k, v in params.items()}),
            content_type="application/x-www-form-urlencoded",
            HTTP_ACCEPT="application/json",
            **self.headers,
        )

    def json(self, path: str, params: Any, *, gzipped: bool = False) -> Any:
        body = json.dumps(params).encode()
        extra = dict(self.headers)
        if gzipped:
            body = gzip.compress(body)
            extra["HTTP_CONTENT_ENCODING"] = "gzip"
        return self.client.generic("POST", path, body, content_type="application/json", **extra)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.get(path, params or {}, **self.headers)


@pytest.fixture
def pilot(token: str) -> Pilot:
    return Pilot(token)


def activated_job(queue: Queue, **kw: Any) -> Any:
    kw.setdefault("task", TaskFactory())
    return JobFactory(jobstatus=JobStatus.ACTIVATED, queue=queue, **kw)
