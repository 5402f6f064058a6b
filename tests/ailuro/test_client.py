"""Server calls of the pilot: retry with backoff, 4xx not retried, and the spool of final reports.

A tiny stub HTTP server on 127.0.0.1 plays the server's failures (5xx, refusing, coming back);
the pilot's behaviour against the real server is in test_pilot_against_server.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ailuro.pilot.client import Retry, Server, ServerRefused, ServerUnavailable, Spool


class Stub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[int] = []  # consumed one per request; empty: 200
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, body))
            status = state.statuses.pop(0) if state.statuses else 200
            reply = json.dumps({"success": status == 200, "message": "", "data": {"StatusCode": 0}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    state.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    state.httpd.shutdown()
    state.httpd.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_5xx_is_retried_with_growing_backoff_until_it_succeeds(stub: Stub) -> None:
    stub.statuses = [503, 502, 500]
    sleeps: list[float] = []
    server = Server(stub.url, token="ail_x", retry=Retry(attempts=5, base_s=1, cap_s=30), sleep=sleeps.append)
    reply = server.post("update_job", {"job_id": 1})
    assert reply.success
    assert len(stub.requests) == 4
    assert stub.requests[0][0] == "/api/v1/pilot/update_job"
    assert len(sleeps) == 3
    assert 0.75 <= sleeps[0] <= 1.25
    assert 1.5 <= sleeps[1] <= 2.5
    assert 3.0 <= sleeps[2] <= 5.0


def test_4xx_is_not_retried(stub: Stub) -> None:
    stub.statuses = [409]
    server = Server(stub.url, sleep=lambda s: None)
    with pytest.raises(ServerRefused) as err:
        server.post("update_job", {"job_id": 1})
    assert err.value.status == 409
    assert len(stub.requests) == 1


def test_unreachable_server_gives_up_after_every_attempt() -> None:
    sleeps: list[float] = []
    server = Server(dead_url(), retry=Retry(attempts=3, base_s=0.01), sleep=sleeps.append)
    with pytest.raises(ServerUnavailable, match="update_job"):
        server.post("update_job", {"job_id": 1})
    assert len(sleeps) == 2


def test_bad_server_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="http"):
        Server("ftp://example.org")


def test_spooled_reports_are_resent_in_order_once_the_server_is_back(stub: Stub, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put("update_job", {"job_id": 1, "job_status": "finished"})
    spool.put("update_job", {"job_id": 2, "job_status": "failed"})
    assert Spool(tmp_path / "spool").flush(Server(dead_url(), sleep=lambda s: None)) == 0
    assert len(spool.pending()) == 2

    assert spool.flush(Server(stub.url)) == 2
    assert [body["job_id"] for _, body in stub.requests] == [1, 2]
    assert spool.pending() == []


def test_a_spooled_report_the_server_refuses_is_set_aside(stub: Stub, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put("update_job", {"job_id": 1})
    spool.put("update_job", {"job_id": 2})
    stub.statuses = [409]
    assert spool.flush(Server(stub.url)) == 1
    assert spool.pending() == []
    assert len(list((tmp_path / "spool").glob("*.refused"))) == 1
