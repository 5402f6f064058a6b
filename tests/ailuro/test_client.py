"""Server calls of the pilot: backoff, Retry-After, the three kinds of failure, and the node's spool.

A tiny stub HTTP server on 127.0.0.1 plays the server (5xx, Retry-After, refusals, the fencing
reply, coming back); the pilot's behaviour against the real server is in
test_pilot_against_server.py.
"""

from __future__ import annotations

import email.utils
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ailuro.pilot.client import (
    Backoff,
    Delivery,
    Retry,
    Server,
    ServerRefused,
    ServerUnavailable,
    Spool,
    SpoolError,
    parse_retry_after,
)

OK = {"success": True, "message": "", "data": {"StatusCode": 0, "command": None}}


class Stub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        # consumed one per request: (status, headers, body); empty: 200 with OK
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.delay_s = 0.0
        # Close the connection after each reply without saying so, as a server whose keep-alive
        # timeout passed does between two calls.
        self.drop_idle = False
        self.connections = 0
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, status: int, body: Any = None, **headers: str) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else OK).encode()
        self.replies.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, raw))

    def job_ids(self) -> list[Any]:
        return [body.get("job_id") for _, body in self.requests]


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with state.lock:
                state.connections += 1

        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append((self.path, body))
                status, headers, raw = (
                    state.replies.pop(0) if state.replies else (200, {}, json.dumps(OK).encode())
                )
            time.sleep(state.delay_s)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(raw)
            if state.drop_idle:
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    state.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.httpd.shutdown()
    state.httpd.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- calls -----------------------------------------------------------------------------------------


def test_5xx_is_retried_with_growing_backoff_until_it_succeeds(stub: Stub) -> None:
    for status in (503, 502, 500):
        stub.answer(status, {"success": False, "message": "down", "data": None})
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


def test_a_kept_alive_connection_the_server_dropped_is_replaced_at_once_without_a_warning(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    stub.drop_idle = True
    sleeps: list[float] = []
    server = Server(stub.url, retry=Retry(attempts=1), sleep=sleeps.append)
    for job_id in (1, 2, 3):
        assert server.post("update_job", {"job_id": job_id}).success
        time.sleep(0.1)  # the server has closed its end meanwhile
    assert stub.job_ids() == [1, 2, 3]
    assert stub.connections == 3
    assert sleeps == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_server_that_goes_away_is_still_unavailable_after_one_reconnection(stub: Stub) -> None:
    stub.drop_idle = True
    server = Server(stub.url, retry=Retry(attempts=1))
    assert server.post("update_job", {"job_id": 1}).success
    assert stub.httpd is not None
    stub.httpd.shutdown()
    stub.httpd.server_close()
    with pytest.raises(ServerUnavailable):
        server.post("update_job", {"job_id": 2})


def test_retry_after_is_honoured_and_its_value_reported(stub: Stub) -> None:
    stub.answer(503, {"success": False, "message": "database unavailable", "data": None}, Retry_After="7")
    sleeps: list[float] = []
    server = Server(stub.url, retry=Retry(attempts=3, base_s=0.1), sleep=sleeps.append)
    assert server.post("update_job", {"job_id": 1}).success
    assert 7.0 <= sleeps[0] <= 7.7

    stub.answer(503, {"success": False, "message": "database unavailable", "data": None}, Retry_After="12")
    with pytest.raises(ServerUnavailable) as err:
        server.call("update_job", {"job_id": 1})
    assert (err.value.status, err.value.retry_after) == (503, 12.0)


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(
        30, abs=1
    )
    assert parse_retry_after("0") == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_huge_retry_after_is_capped() -> None:
    assert Retry(max_retry_after_s=900).delay(0, retry_after=10**9) <= 990


def test_408_and_429_are_retried_other_4xx_are_not(stub: Stub) -> None:
    stub.answer(429, Retry_After="1")
    stub.answer(408)
    server = Server(stub.url, retry=Retry(attempts=5, base_s=0.01), sleep=lambda s: None)
    assert server.post("update_job", {"job_id": 1}).success
    assert len(stub.requests) == 3

    stub.answer(409, {"success": False, "message": "conflict", "data": None})
    with pytest.raises(ServerRefused) as err:
        server.post("update_job", {"job_id": 2})
    assert err.value.status == 409
    assert not err.value.credentials
    assert len(stub.requests) == 4

    stub.answer(401, {"success": False, "message": "invalid token", "data": None})
    with pytest.raises(ServerRefused) as err:
        server.post("update_job", {"job_id": 3})
    assert err.value.credentials


def test_a_connection_error_has_no_status() -> None:
    server = Server(dead_url(), retry=Retry(attempts=1))
    with pytest.raises(ServerUnavailable) as err:
        server.post("update_job", {"job_id": 1})
    assert err.value.status is None
    assert "ConnectionRefusedError" in str(err.value)


def test_a_keep_alive_connection_the_server_closed_while_idle_is_replaced_at_once() -> None:
    """A server that drops idle keep-alive connections (gunicorn after 2 s, a proxy after 75 s)
    without saying so: the next call finds its connection closed and is sent again on a new one,
    without failing or waiting a backoff step; a fresh connection that fails is not resent."""
    seen: list[int] = []

    class Closing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.client_address[1])
            raw = json.dumps(OK).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            self.close_connection = True  # closed after the answer, though the answer kept it alive

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Closing)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        server = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
        for n in range(3):
            assert server.call("update_job", {"job_id": n}).success  # `call` never retries on its own
            time.sleep(0.2)  # idle: the server has closed the connection by now
        assert len(seen) == 3
        assert len(set(seen)) == 3  # a new connection (client port) for each call
        server.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_2xx_that_is_not_json_is_retried(stub: Stub) -> None:
    stub.answer(200, b"<html>proxy maintenance</html>")
    server = Server(stub.url, retry=Retry(attempts=3, base_s=0.01), sleep=lambda s: None)
    assert server.post("update_job", {"job_id": 1}).success
    assert len(stub.requests) == 2


def test_unreachable_server_gives_up_after_every_attempt() -> None:
    sleeps: list[float] = []
    server = Server(dead_url(), retry=Retry(attempts=3, base_s=0.01), sleep=sleeps.append)
    with pytest.raises(ServerUnavailable, match="update_job"):
        server.post("update_job", {"job_id": 1})
    assert len(sleeps) == 2


def test_stop_ends_the_retries() -> None:
    server = Server(dead_url(), retry=Retry(attempts=0, base_s=5))
    started = time.monotonic()
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(ServerUnavailable):
        server.post("update_job", {"job_id": 1}, stop=stop)
    assert time.monotonic() - started < 3


def test_backoff_without_attempt_limit_lasts_until_the_horizon() -> None:
    clock = FakeClock()
    backoff = Backoff(Retry(attempts=0, horizon_s=7200, base_s=0.5, cap_s=60), clock=clock)
    delays = []
    while (delay := backoff.next()) is not None:
        delays.append(delay)
        clock.now += delay
    assert sum(delays) == pytest.approx(7200)
    assert max(delays) <= 75  # capped at 60 s ± 25 %
    assert len(delays) > 100  # it kept trying the whole time
    assert delays[:3] == sorted(delays[:3])


def test_backoff_delays_grow_capped_and_jittered() -> None:
    retry = Retry(base_s=1, cap_s=8)
    for n, nominal in enumerate([1, 2, 4, 8, 8, 8]):
        samples = [retry.delay(n) for _ in range(200)]
        assert nominal * 0.75 <= min(samples) <= max(samples) <= nominal * 1.25
        assert len(set(samples)) > 100  # jittered, not a fixed value
    assert retry.delay(10_000) <= 10  # no overflow far down the road


def test_bad_server_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="http"):
        Server("ftp://example.org")


# --- the spool ---------------------------------------------------------------------------------------


def spool_for(folder: Path, url: str, queue: str = "Q") -> Spool:
    spool = Spool(folder, url=url, queue=queue)
    spool.prepare()
    return spool


def report(job_id: int, status: str = "finished") -> dict[str, Any]:
    return {"job_id": job_id, "attempt_nr": 1, "job_status": status}


def test_a_spooled_report_is_one_private_complete_file(tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", "http://server")
    path = spool.put("update_job", report(7))
    assert oct((tmp_path / "spool").stat().st_mode & 0o777) == oct(0o700)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert json.loads(path.read_text())["payload"] == report(7)
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [path.name]  # no temporary left


def test_spooled_reports_are_resent_in_order_once_the_server_is_back(stub: Stub, tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    spool.put("update_job", report(1))
    spool.put("update_job", report(2, "failed"))
    down = spool.flush(Server(dead_url(), sleep=lambda s: None))
    assert (len(down.delivered), len(down.pending)) == (0, 2)
    assert len(spool.pending()) == 2

    flushed = spool.flush(Server(stub.url))
    assert len(flushed.delivered) == 2
    assert stub.job_ids() == [1, 2]
    assert spool.pending() == []
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_pilot_sends_only_reports_of_its_server_and_queue(stub: Stub, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool_for(folder, stub.url, "OTHER_Q").put("update_job", report(1))
    spool_for(folder, "http://other-server:8000", "Q").put("update_job", report(2))
    mine = spool_for(folder, stub.url + "/", "Q")
    mine.put("update_job", report(3))
    assert len(mine.flush(Server(stub.url)).delivered) == 1
    assert stub.job_ids() == [3]
    assert len(list(folder.glob("*.json"))) == 2


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, OK, Delivery.DELIVERED),
        (
            200,
            {"success": True, "message": "", "data": {"StatusCode": 0, "command": "tobekilled"}},
            Delivery.REFUSED,
        ),
        (400, {"success": False, "message": "attemptNr is required", "data": None}, Delivery.REFUSED),
        (403, {"success": False, "message": "job 1 belongs to queue ''", "data": None}, Delivery.REFUSED),
        (401, {"success": False, "message": "invalid token", "data": None}, Delivery.PENDING),
        (503, {"success": False, "message": "database unavailable", "data": None}, Delivery.PENDING),
        (200, {"success": True, "message": "", "data": {"StatusCode": 30}}, Delivery.PENDING),
    ],
)
def test_what_the_server_answers_decides_whether_a_report_stays(
    stub: Stub, tmp_path: Path, status: int, body: Any, outcome: Delivery
) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    path = spool.put("update_job", report(1))
    stub.answer(status, body)
    assert spool.deliver(path, Server(stub.url)) is outcome
    assert path.exists() == (outcome is Delivery.PENDING)


def test_the_servers_retry_after_reaches_the_flushing_pilot(stub: Stub, tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    spool.put("update_job", report(1))
    stub.answer(503, {"success": False, "message": "database unavailable", "data": None}, Retry_After="20")
    assert spool.flush(Server(stub.url)).retry_after == 20


def test_a_report_another_pilot_is_sending_is_skipped(stub: Stub, tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    path = spool.put("update_job", report(1))
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert spool.deliver(path, Server(stub.url)) is Delivery.BUSY
        assert stub.requests == []
    finally:
        os.close(fd)
    assert spool.deliver(path, Server(stub.url)) is Delivery.DELIVERED


@pytest.mark.parametrize("delivered", [True, False], ids=["the-other-delivered", "the-other-could-not"])
def test_the_writer_waits_for_a_pilot_sending_its_report_before_it_says_anything(
    stub: Stub, tmp_path: Path, delivered: bool
) -> None:
    """The pilot that wrote a report finds another pilot's flush sending it: it waits for that one
    try, then the report is GONE (delivered by the other) or it sends it itself."""
    spool = spool_for(tmp_path / "spool", stub.url)
    path = spool.put("update_job", report(1))
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def the_other_pilot() -> None:
        time.sleep(0.3)
        if delivered:
            path.unlink()
        os.close(fd)

    thread = threading.Thread(target=the_other_pilot)
    thread.start()
    try:
        started = time.monotonic()
        outcome = spool.deliver(path, Server(stub.url), wait_s=10)
        assert 0.25 < time.monotonic() - started < 5
    finally:
        thread.join()
    assert outcome is (Delivery.GONE if delivered else Delivery.DELIVERED)
    assert stub.job_ids() == ([] if delivered else [1])
    assert not path.exists()


def test_a_report_delivered_while_waiting_for_its_lock_is_not_sent_again(stub: Stub, tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    path = spool.put("update_job", report(1))
    fd = os.open(path, os.O_RDONLY)
    path.unlink()  # the other pilot delivered and deleted it; this one had opened it before
    os.close(fd)
    assert spool.deliver(path, Server(stub.url)) is Delivery.GONE
    assert stub.requests == []


def test_pilots_flushing_one_spool_at_once_send_each_report_once(stub: Stub, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    writer = spool_for(folder, stub.url)
    for job_id in range(40):
        writer.put("update_job", report(job_id))
    stub.delay_s = 0.01  # a slow server widens every race window
    results = []

    def flush() -> None:
        results.append(spool_for(folder, stub.url).flush(Server(stub.url)))

    threads = [threading.Thread(target=flush) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while writer.pending():  # reports skipped as busy are sent by a later turn
        writer.flush(Server(stub.url))
    assert sorted(stub.job_ids()) == list(range(40))
    assert list(folder.iterdir()) == []


def test_an_unreadable_report_is_deleted_not_sent(stub: Stub, tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    path = spool.put("update_job", report(1))
    path.write_text("{not json")
    assert spool.deliver(path, Server(stub.url)) is Delivery.REFUSED
    assert not path.exists()
    assert stub.requests == []


def test_temporaries_of_a_writer_that_died_are_swept(stub: Stub, tmp_path: Path) -> None:
    spool = spool_for(tmp_path / "spool", stub.url)
    stale = tmp_path / "spool" / f".tmp-{spool.key}-1-1.1-dead.json"
    stale.write_text('{"method": "update_job", "pay')
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / "spool" / f".tmp-{spool.key}-2-2.1-live.json"
    fresh.write_text("{")
    spool.flush(Server(stub.url))
    assert not stale.exists()
    assert fresh.exists()
    assert stub.requests == []


def test_a_spool_others_can_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SpoolError, match="writable by others"):
        Spool(shared, url="http://s", queue="Q").prepare()
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SpoolError, match="not a directory"):
        Spool(link, url="http://s", queue="Q").prepare()


def run_pilot_command(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    argv = [sys.executable, "-m", "ailuro.cli", "pilot", "--url", dead_url(), "--queue", "Q"]
    argv += ["--workdir", str(tmp_path / "work"), "--retries", "1", *extra]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})}
    )


def test_an_unsafe_spool_given_to_the_pilot_stops_it_and_an_unsafe_default_falls_back(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    given = run_pilot_command(tmp_path, "--spool", str(shared))
    assert given.returncode == 4, given.stderr
    assert "writable by others" in given.stderr

    default = run_pilot_command(tmp_path, env={"AILURO_PILOT_SPOOL": str(shared)})
    assert default.returncode == 2, default.stderr  # it ran, and found no server
    assert f"spooling to {tmp_path / 'work' / 'spool'} instead" in default.stderr
