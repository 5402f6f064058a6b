from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.factories import QueueFactory, UserFactory

SPEC = """
name: {name}
dimension: visit
pipeline:
  isr: {{command: "run isr {{data_id}}", memory_mb: 2000, walltime_s: 600}}
  calibrate: {{command: "run calibrate {{data_id}}", parents: [isr], memory_mb: 2000}}
  coadd: {{command: "run coadd {{group}}", parents: [calibrate], per: group, memory_mb: 3000}}
data:
  ranges: [[1, {n}]]
steps:
  - name: step1
    labels: [isr, calibrate]
    split: {{rule: query, max_group_size: {size}}}
    max_running_groups: {throttle}
  - name: step2
    labels: [coadd]
    split: {{rule: query, max_group_size: {size}}}
notifications: {{webhook: "{webhook}", events: [failure, stall, completion]}}
stall_after_s: 600
"""


def spec_text(*, name: str = "c1", n: int = 6, size: int = 3, throttle: int = 0, webhook: str = "") -> str:
    return SPEC.format(name=name, n=n, size=size, throttle=throttle, webhook=webhook)


@pytest.fixture
def operator():
    return UserFactory(username="operator")


@pytest.fixture
def queue():
    return QueueFactory(name="TEST_QUEUE", max_rss_mb=64000)


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A small HTTP receiver on 127.0.0.1 (port 0); yields its URL and the JSON bodies it got."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
