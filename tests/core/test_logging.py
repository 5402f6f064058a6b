from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.test import Client

from core.logging import LogContextFilter, RedactSecretsFilter, log_context, redact
from core.middleware import REQUEST_ID


def test_tokens_and_authorization_headers_are_masked() -> None:
    assert "sekrit" not in redact("Authorization: Bearer sekrit.jwt.value")
    assert "ail_abcdefghijkl" not in redact("token ail_abcdefghijklmnop used")
    assert redact("nothing secret here") == "nothing secret here"


def test_log_lines_are_json_with_ids(capsys: object) -> None:
    from pythonjsonlogger.json import JsonFormatter

    record = logging.LogRecord("dispatcher", logging.INFO, __file__, 1, "job %s: Bearer abc.def", (7,), None)
    record.pandaid = 7
    assert RedactSecretsFilter().filter(record)
    line = JsonFormatter("%(levelname)s %(name)s %(message)s").format(record)
    data = json.loads(line)
    assert data["pandaid"] == 7
    assert "abc.def" not in data["message"]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The JSON handler the settings configure, writing into a buffer for the test; INFO let through."""
    handler = next(
        h for h in logging.getLogger().handlers if any(isinstance(f, LogContextFilter) for f in h.filters)
    )
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.setLevel(level)
        handler.setStream(previous)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/server/panda/getJob", "/api/v1/pilot/acquire_jobs"])
def test_the_lines_of_a_request_carry_its_id_and_the_reply_echoes_it(
    log_stream: io.StringIO, path: str
) -> None:
    """A pilot call without a token (the lean pilot lane) logs its refusal: the line carries the id
    the proxy sent, and the reply's X-Request-ID is the same."""
    reply = Client().post(path, {"siteName": "X"}, headers={"X-Request-ID": "nginx-5f1c2a"})
    assert reply["X-Request-ID"] == "nginx-5f1c2a"
    refused = [line for line in _lines(log_stream) if line.get("event") == "pilot.refused"]
    assert refused, log_stream.getvalue()
    assert {line["request_id"] for line in refused} == {"nginx-5f1c2a"}


@pytest.mark.django_db
def test_a_request_without_an_acceptable_id_gets_a_new_one(log_stream: io.StringIO) -> None:
    first = Client().get("/healthz", headers={"X-Request-ID": "has spaces and\ttabs"})
    second = Client().get("/healthz")
    ids = {first["X-Request-ID"], second["X-Request-ID"]}
    assert len(ids) == 2
    assert all(REQUEST_ID.fullmatch(i) and len(i) == 32 for i in ids)


def test_context_fields_reach_every_line_and_an_explicit_field_wins(log_stream: io.StringIO) -> None:
    log = logging.getLogger("dispatcher.test")
    with log_context(loop="watcher", task_id="t-1"):
        log.info("inside")
        log.info("own loop", extra={"loop": "brokerage"})
    log.info("outside")
    inside, own, outside = _lines(log_stream)[-3:]
    assert (inside["loop"], inside["task_id"]) == ("watcher", "t-1")
    assert own["loop"] == "brokerage"
    assert "loop" not in outside
    assert "task_id" not in outside
