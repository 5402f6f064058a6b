"""Talking to the server: v1 pilot protocol calls with backoff, and the node's spool of reports.

The pilot keeps one HTTP connection open (http.client, keep-alive) because a fresh connection per
call costs more than the call itself on a busy server. Answers fall in three kinds:

* the server could not answer — a connection error, a 5xx, 408 or 429 (`ServerUnavailable`, with
  the server's `Retry-After` when it sent one): retried with capped exponential backoff and
  jitter, never sooner than `Retry-After`, until the policy's attempts or horizon run out;
* the server refused — any other 4xx (`ServerRefused`): retrying the same request cannot help;
* an answer.

Final reports go through the spool (`Spool`): a directory shared by every pilot on the node, where
each report is written atomically before it is sent and deleted once the server took it or
refused it for good. Any pilot of the same server and queue on the node sends what another one
left behind; a lock per report makes sure only one of them sends it at a time.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import stat
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ailuro.protocol import COMMAND_KILL, PILOT_RETRY_HORIZON_S, V1_PILOT_PREFIX

log = logging.getLogger("ailuro.pilot")

# 4xx answers that mean "not now" rather than "never": the server is overloaded or the pilot's
# credentials are being renewed.
_RETRYABLE_4XX = frozenset({408, 425, 429})
_AUTH_4XX = frozenset({401})


class ServerUnavailable(Exception):
    """No answer: the connection failed, or the server answered 5xx/408/429, after every retry.

    `status` is None for a connection error; `retry_after` is the server's Retry-After in seconds.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ServerRefused(Exception):
    """The server answered with a 4xx: retrying the same request will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status

    @property
    def credentials(self) -> bool:
        """The pilot's credentials were refused: another pilot (or this one with a renewed token)
        may still deliver the same request."""
        return self.status in _AUTH_4XX


@dataclass(frozen=True)
class Reply:
    success: bool
    message: str
    data: Any

    @property
    def command(self) -> str:
        return str(self.data.get("command") or "") if isinstance(self.data, dict) else ""

    @property
    def wants_kill(self) -> bool:
        return COMMAND_KILL in {part.strip() for part in self.command.split(",")}


@dataclass(frozen=True)
class Retry:
    """Backoff policy: up to `attempts` tries (0: no limit) within `horizon_s` seconds, sleeping
    base·2^n capped at `cap_s`, ±25 % jitter, and never less than the server's Retry-After
    (itself capped at `max_retry_after_s`, plus up to 10 % so a fleet does not return at once)."""

    attempts: int = 0
    horizon_s: float = PILOT_RETRY_HORIZON_S
    base_s: float = 0.5
    cap_s: float = 60.0
    max_retry_after_s: float = 900.0

    def delay(self, n: int, retry_after: float | None = None) -> float:
        """The sleep before retry number n+1 (n = 0 after the first failure)."""
        delay = min(self.cap_s, self.base_s * 2.0 ** min(n, 40)) * random.uniform(0.75, 1.25)  # noqa: S311  (jitter, not a secret)
        if retry_after is not None and retry_after > 0:
            wait = min(retry_after, self.max_retry_after_s) * random.uniform(1.0, 1.1)  # noqa: S311
            delay = max(delay, wait)
        return delay

    def delays(self) -> list[float]:
        """The sleeps of a policy with a finite number of attempts (no Retry-After)."""
        return [self.delay(n) for n in range(max(self.attempts - 1, 0))]


class Backoff:
    """The state of one operation retried under a `Retry` policy."""

    def __init__(self, retry: Retry, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry = retry
        self.clock = clock
        self.started = clock()
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float | None:
        """The sleep before the next try after one more failure, or None when the policy is used up
        (attempts spent, or the horizon reached: the last sleep ends at the horizon)."""
        self.failures += 1
        if self.retry.attempts and self.failures >= self.retry.attempts:
            return None
        remaining = self.retry.horizon_s - (self.clock() - self.started)
        if remaining <= 0:
            return None
        return min(self.retry.delay(self.failures - 1, retry_after), remaining)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def sleep_unless(seconds: float, stop: Callable[[], bool] | None, sleep: Callable[[float], None]) -> bool:
    """Sleep `seconds` (in short steps when there is a `stop` to watch); False as soon as `stop()`
    says to give up."""
    if stop is None:
        sleep(seconds)
        return True
    deadline = time.monotonic() + seconds
    while True:
        if stop():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        sleep(min(left, 0.25))


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
        self.url = url
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retry = retry or Retry()
        self.sleep = sleep
        self._conn: http.client.HTTPConnection | None = None
        self._answered = False  # the open connection has carried an answer: it was kept alive

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout_s)
            self._answered = False
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post_once(self, path: str, body: bytes) -> tuple[int, bytes, str | None]:
        """One POST. A kept-alive connection the server dropped while it was idle (its keep-alive
        timeout passed: the request meets a closed socket, or the connection closes without an
        answer) is replaced by a new one at once, once; any other failure is the caller's."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        while True:
            conn = self._connection()
            # http.client reconnects by itself after an answer that closed the connection.
            reused = self._answered and conn.sock is not None
            try:
                conn.request("POST", self.prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.status, response.read(), response.getheader("Retry-After")
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                # http.client.RemoteDisconnected is a ConnectionResetError.
                self.close()
                if reused:
                    log.debug("%s: the server dropped the idle connection; reconnecting", path)
                    continue
                raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            self._answered = True
            return answer

    def call(self, method: str, payload: Mapping[str, Any]) -> Reply:
        """One POST to /api/v1/pilot/<method>, no retry: a Reply, ServerRefused (4xx) or
        ServerUnavailable (connection error, 5xx, 408/429, or a 2xx that is not a JSON object)."""
        path = method if method.startswith("/") else V1_PILOT_PREFIX + method
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            status, raw, retry_after = self._post_once(path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnavailable(f"{method}: {type(exc).__name__}: {exc}") from None
        if status < 400:
            return _parse_reply(method, raw)
        text = raw[:300].decode(errors="replace")
        if status >= 500 or status in _RETRYABLE_4XX:
            raise ServerUnavailable(
                f"{method}: HTTP {status}: {text}", status=status, retry_after=parse_retry_after(retry_after)
            )
        raise ServerRefused(status, text)

    def post(
        self,
        method: str,
        payload: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        *,
        retry: Retry | None = None,
        stop: Callable[[], bool] | None = None,
        between: Callable[[], object] | None = None,
    ) -> Reply:
        """`call`, retried under `retry` (default: the server's policy) while the server is
        unavailable and `stop()` is false; `between()` runs before each retry, and a callable
        `payload` is built anew for each try (it may hold times). Raises
        ServerRefused at once on a 4xx and ServerUnavailable, the last failure, when the policy is
        used up or `stop()` said so."""
        backoff = Backoff(retry or self.retry)
        while True:
            try:
                return self.call(method, payload() if callable(payload) else payload)
            except ServerUnavailable as exc:
                delay = backoff.next(exc.retry_after)
                if delay is None:
                    raise
                log.warning("%s; retrying in %.1f s", exc, delay)
                if not sleep_unless(delay, stop, self.sleep):
                    raise
            if between is not None:
                between()


def _parse_reply(method: str, raw: bytes) -> Reply:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        raise ServerUnavailable(f"{method}: unparseable reply: {raw[:200]!r}") from None
    if not isinstance(doc, dict):
        raise ServerUnavailable(f"{method}: reply is not an object: {raw[:200]!r}")
    return Reply(
        success=bool(doc.get("success")), message=str(doc.get("message") or ""), data=doc.get("data")
    )


# ---------------------------------------------------------------------------------------------
# The node's spool of final reports


class SpoolError(Exception):
    """The spool directory cannot be used safely (owned by someone else, writable by others)."""


class Delivery(enum.Enum):
    DELIVERED = "delivered"  # the server took it: deleted
    REFUSED = "refused"  # the server will never take it (fencing reply, 4xx): deleted
    PENDING = "pending"  # the server is unavailable or refused the credentials: kept
    BUSY = "busy"  # another pilot is sending it right now
    GONE = "gone"  # another pilot delivered it already


@dataclass
class Flushed:
    delivered: list[Path] = field(default_factory=list)
    refused: list[Path] = field(default_factory=list)
    pending: list[Path] = field(default_factory=list)  # not sent this time
    gone: list[Path] = field(default_factory=list)
    retry_after: float | None = None  # the server's Retry-After when it could not take them


def default_spool_dir() -> Path:
    """`$AILURO_PILOT_SPOOL`, else /var/tmp/ailuro-pilot-spool-<uid>: on the node's own disk (flock
    is unreliable on shared file systems such as NFS home directories) and kept across batch jobs
    and reboots, so the next pilot on the node finds what an earlier one left."""
    configured = os.environ.get("AILURO_PILOT_SPOOL")
    if configured:
        return Path(configured)
    return Path("/var/tmp") / f"ailuro-pilot-spool-{os.getuid()}"  # noqa: S108  (checked: ours, 0700)


def _describe(payload: Mapping[str, Any]) -> str:
    return (
        f"job {payload.get('job_id')} attempt {payload.get('attempt_nr')} "
        f"{payload.get('job_status', '')}".rstrip()
    )


class Spool:
    """Final reports not yet taken by the server, one JSON file each, in a directory every pilot of
    the node shares.

    * A report is written atomically (temporary name, fsync, rename, fsync of the directory): a
      pilot killed mid-write leaves no half report, a crash right after loses none.
    * File names start with a key of (server URL, queue), so a pilot only sends reports of its
      own server and queue (its token may be bound to that queue alone), oldest first.
    * Sending takes an exclusive `flock` on the file and deletes it before releasing the lock: two
      pilots never send the same report at the same time, and a report is sent again only when
      the server did not answer.
    """

    def __init__(self, folder: Path, *, url: str, queue: str) -> None:
        self.folder = folder
        self.key = hashlib.sha256(f"{url.rstrip('/')}\n{queue}".encode()).hexdigest()[:12]
        self.retry_after: float | None = None  # from the last report the server could not take

    def prepare(self) -> None:
        """Create the directory (mode 0700) or check that an existing one is safe: a directory,
        not a symlink, owned by this user and writable by nobody else — a report planted by
        someone else would be sent with this pilot's token."""
        try:
            self.folder.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SpoolError(f"cannot create the spool {self.folder}: {exc}") from None
        info = os.lstat(self.folder)
        if not stat.S_ISDIR(info.st_mode):
            raise SpoolError(f"the spool {self.folder} is not a directory (a symlink?)")
        if info.st_uid != os.getuid():
            raise SpoolError(f"the spool {self.folder} belongs to uid {info.st_uid}, not to this user")
        if info.st_mode & 0o022:
            raise SpoolError(
                f"the spool {self.folder} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                "chmod go-w it or choose another with --spool"
            )

    def put(self, method: str, payload: Mapping[str, Any]) -> Path:
        """Write one report; returns its path."""
        name = (
            f"{self.key}-{time.time_ns()}-{payload.get('job_id', 'x')}.{payload.get('attempt_nr', 'x')}"
            f"-{uuid.uuid4().hex[:8]}.json"
        )
        entry = {
            "method": method,
            "payload": dict(payload),
            "created": time.time(),
            "writer": f"{socket.gethostname()}:{os.getpid()}",
        }
        tmp = self.folder / f".tmp-{name}"
        final = self.folder / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entry, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.folder)
        return final

    def pending(self) -> list[Path]:
        """This server's and queue's reports, oldest first."""
        try:
            names = [
                n for n in os.listdir(self.folder) if n.startswith(self.key + "-") and n.endswith(".json")
            ]
        except OSError:
            return []
        return [self.folder / n for n in sorted(names, key=_created_ns)]

    def deliver(
        self, path: Path, server: Server, *, retry: Retry | None = None, wait_s: float = 0.0
    ) -> Delivery:
        """Send one report under its lock (retried under `retry`, default one try); delete it when
        the server took it or refused it for good. While another pilot holds the lock (it is
        sending the report), wait for it up to `wait_s` seconds: it is then GONE when that pilot
        delivered it, else this one sends it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return Delivery.GONE
        try:
            if not _lock(fd, wait_s):
                return Delivery.BUSY
            if os.fstat(fd).st_nlink == 0:  # delivered and deleted while we waited for the lock
                return Delivery.GONE
            with os.fdopen(os.dup(fd), "rb") as fh:
                raw = fh.read()
            entry = _read_entry(raw)
            if entry is None:
                log.error("spooled report %s is unreadable; deleting it: %r", path.name, raw[:200])
                self._remove(path)
                return Delivery.REFUSED
            method, payload = entry
            return self._send(path, method, payload, server, retry or Retry(attempts=1))
        finally:
            os.close(fd)  # releases the lock, after the file is gone when it was delivered

    def _send(
        self, path: Path, method: str, payload: dict[str, Any], server: Server, retry: Retry
    ) -> Delivery:
        what = _describe(payload)
        try:
            reply = server.post(method, payload, retry=retry)
        except ServerUnavailable as exc:
            # Not a warning of its own: whoever flushes says that the server is unavailable.
            log.debug("report of %s not delivered yet (%s); kept in %s", what, exc, self.folder)
            self.retry_after = exc.retry_after
            return Delivery.PENDING
        except ServerRefused as exc:
            if exc.credentials:
                log.error("report of %s: the server refused this pilot's credentials (%s); kept", what, exc)
                return Delivery.PENDING
            log.warning("report of %s refused by the server (%s); deleting %s", what, exc, path.name)
            self._remove(path)
            return Delivery.REFUSED
        status = reply.data.get("StatusCode") if isinstance(reply.data, dict) else None
        if status not in (None, 0, "0"):
            log.warning("report of %s not accepted (StatusCode %s); kept", what, status)
            return Delivery.PENDING
        if not reply.success or reply.wants_kill:
            # The fence did not match: the attempt is over, stale, or unknown to the server.
            reason = reply.message or f"command {reply.command or 'none'}"
            log.warning(
                "report of %s no longer wanted by the server (%s); deleting %s", what, reason, path.name
            )
            self._remove(path)
            return Delivery.REFUSED
        self._remove(path)
        return Delivery.DELIVERED

    def _remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _fsync_dir(self.folder)

    def flush(self, server: Server) -> Flushed:
        """Send every pending report once, oldest first; stop at the first the server cannot take
        now (it is down: the others would fail the same way). Reports another pilot is sending are
        skipped."""
        result = Flushed()
        self.retry_after = None
        paths = self.pending()
        for i, path in enumerate(paths):
            outcome = self.deliver(path, server)
            if outcome is Delivery.DELIVERED:
                result.delivered.append(path)
            elif outcome is Delivery.REFUSED:
                result.refused.append(path)
            elif outcome is Delivery.GONE:
                result.gone.append(path)
            elif outcome is Delivery.BUSY:
                result.pending.append(path)
            else:
                result.pending.extend(paths[i:])
                result.retry_after = self.retry_after
                break
        self._sweep_temporaries()
        return result

    def _sweep_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Delete temporary files of writers that died mid-write (never a complete report)."""
        try:
            names = [n for n in os.listdir(self.folder) if n.startswith(f".tmp-{self.key}-")]
        except OSError:
            return
        for name in names:
            path = self.folder / name
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > older_than_s:
                    path.unlink()


def _lock(fd: int, wait_s: float) -> bool:
    """Take the report's exclusive lock, polling for up to `wait_s` seconds; False when another
    process still holds it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        else:
            return True


def _read_entry(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("payload"), dict):
        return None
    return str(entry.get("method") or "update_job"), entry["payload"]


def _created_ns(name: str) -> int:
    parts = name.split("-", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
