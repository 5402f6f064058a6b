"""Talking to the server: v1 pilot protocol calls with retry and backoff, and the spool.

The pilot keeps one HTTP connection open (http.client, keep-alive) because a fresh connection per
call costs more than the call itself on a busy server. Every call is retried with exponential
backoff; a final report that still cannot be delivered is written to the spool directory and sent
again when the server answers (before the next acquire and when the pilot starts).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ailuro.protocol import V1_PILOT_PREFIX

log = logging.getLogger("ailuro.pilot")


class ServerUnavailable(Exception):
    """The server could not be reached, or kept answering with 5xx, after every retry."""


class ServerRefused(Exception):
    """The server answered with a 4xx: retrying the same request will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Reply:
    success: bool
    message: str
    data: Any


@dataclass
class Retry:
    """Backoff policy: `attempts` tries, sleeping base·2^n (capped, with ±25 % jitter) between."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def delays(self) -> list[float]:
        return [
            min(self.cap_s, self.base_s * 2**n) * random.uniform(0.75, 1.25)  # noqa: S311  (jitter, not a secret)
            for n in range(self.attempts - 1)
        ]


class Server:
    """One keep-alive connection to the ailuro server's v1 pilot API."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: Retry | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError(f"server URL must be http(s)://host[:port][/prefix], got {url!r}")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retry = retry or Retry()
        self.sleep = sleep
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post_once(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            conn.request("POST", self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def post(self, method: str, payload: Mapping[str, Any], *, retry: Retry | None = None) -> Reply:
        """POST `payload` to /api/v1/pilot/<method>; retry connection errors and 5xx with backoff.

        Raises ServerRefused on 4xx (the request itself is wrong or no longer wanted) and
        ServerUnavailable when every attempt failed.
        """
        path = method if method.startswith("/") else V1_PILOT_PREFIX + method
        body = json.dumps(payload, separators=(",", ":")).encode()
        last = "no attempt"
        delays = (retry or self.retry).delays()
        for attempt in range(len(delays) + 1):
            try:
                status, raw = self._post_once(path, body)
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status < 400:
                    return _parse_reply(raw)
                text = raw[:300].decode(errors="replace")
                if status < 500 and status not in {408, 429}:
                    raise ServerRefused(status, text)
                last = f"HTTP {status}: {text}"
            if attempt < len(delays):
                log.warning("%s failed (%s); retrying in %.1f s", method, last, delays[attempt])
                self.sleep(delays[attempt])
        raise ServerUnavailable(f"{method}: {last}")


def _parse_reply(raw: bytes) -> Reply:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ServerUnavailable(f"unparseable reply: {raw[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise ServerUnavailable(f"reply is not an object: {raw[:200]!r}")
    return Reply(
        success=bool(doc.get("success")), message=str(doc.get("message") or ""), data=doc.get("data")
    )


class Spool:
    """Final reports the server did not take yet, one JSON file each, oldest first.

    A file is written atomically (temp name, then rename) so a pilot killed mid-write leaves no
    half report; it is deleted only after the server accepted it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, method: str, payload: Mapping[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
        tmp = self.folder / (name + ".tmp")
        tmp.write_text(json.dumps({"method": method, "payload": payload}))
        final = self.folder / name
        os.replace(tmp, final)
        return final

    def pending(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.json"))

    def flush(self, server: Server) -> int:
        """Send every spooled report once (no long retry: the server was down). Returns how many
        were delivered; stops at the first one the server still cannot take."""
        sent = 0
        for path in self.pending():
            entry = json.loads(path.read_text())
            try:
                server.post(entry["method"], entry["payload"], retry=Retry(attempts=1))
            except ServerRefused as exc:
                # The server read it and said no (job gone, stale attempt): keep it out of the way.
                log.warning("spooled report %s refused (%s); dropping it", path.name, exc)
                path.rename(path.with_suffix(".refused"))
            except ServerUnavailable:
                break
            else:
                path.unlink()
                sent += 1
        return sent
