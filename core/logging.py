"""Logging helpers: secrets never reach the log stream, and every line says which request, loop
or task it belongs to (docs/architecture.md#errors-and-logs)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(bearer\s+)?[^\s\"',}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(ail_)[A-Za-z0-9_-]{8,}"),
]


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Masks bearer tokens and Authorization values in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


# Fields every log line of the current request, loop run or Celery task carries (request_id,
# loop, task_id): set where the work starts, added by `LogContextFilter` on the stdout handler.
# A field the log call passes itself (`extra=`) wins.
_context: ContextVar[tuple[tuple[str, object], ...]] = ContextVar("ailuro_log_context", default=())


def log_context_set(**fields: object) -> Token[tuple[tuple[str, object], ...]]:
    """Add fields to the current context; give the token back to `log_context_reset`."""
    return _context.set(_context.get() + tuple(fields.items()))


def log_context_reset(token: Token[tuple[tuple[str, object], ...]]) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    token = log_context_set(**fields)
    try:
        yield
    finally:
        log_context_reset(token)


class LogContextFilter(logging.Filter):
    """Copies the context's fields onto each record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            if key not in record.__dict__:
                record.__dict__[key] = value
        return True
