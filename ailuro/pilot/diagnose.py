"""What went wrong with a payload, in the error fields of the final report (pure, no I/O).

`diagnose` turns how the payload ended (exit code, signal, the pilot's own reason to stop it,
the measured memory) and the tail of its output into PanDA's error fields:

* `transExitCode`: the raw exit code (128 + N when a signal N ended it, as shells report it);
* `exeErrorCode` / `exeErrorDiag`: the payload's failure, told by the payload — its exit code and
  the line of its output that says why (`extract_message`);
* `pilotErrorCode` / `pilotErrorDiag`: what the pilot saw — it stopped the payload (memory,
  walltime, server kill, preemption) or a signal ended it (pilot3's codes, `ailuro.protocol`).

Diags are bounded to the server's diag columns (`DIAG_LIMIT` characters), cleaned of control
characters (PostgreSQL refuses NUL) and redacted of secrets (`redact`). The families and codes are
chosen so that the server's retry rules can match them; docs/operator-guide/retries.md lists both.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ailuro.protocol import (
    PILOT_ERROR_KILL_SIGNAL,
    PILOT_ERROR_MEMORY,
    PILOT_ERROR_PAYLOAD_SIGSEGV,
    PILOT_ERROR_SIGBUS,
    PILOT_ERROR_SIGINT,
    PILOT_ERROR_SIGQUIT,
    PILOT_ERROR_SIGTERM,
    PILOT_ERROR_SIGUSR1,
    PILOT_ERROR_SIGXCPU,
)

# PanDA's and ailuro's *errordiag columns hold 500 characters (dispatcher.models.Job).
DIAG_LIMIT = 500
# How much of the end of the payload's output is read for the diagnosis.
TAIL_BYTES = 64 * 1024
# A line longer than this is cut before any pattern looks at it: bounded work per line.
LINE_LIMIT = 4096
# The plain fallback: at most this many last lines.
FALLBACK_LINES = 3

# --- secrets --------------------------------------------------------------------------------------

_MASK = "***"
# The names of secrets (not secrets): `name=value` and `"name": "value"` get their value masked.
_SECRET_NAMES = "|".join(
    (
        r"passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key",
        r"credentials?|signature|sig|x-amz-security-token|x-amz-credential",
    )
)
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host → scheme://user:***@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]+@"), rf"\1:{_MASK}@"),
    # Authorization: Bearer xyz / Basic abc= (header or key=value)
    (
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"
        ),
        rf"\1{_MASK}",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1{_MASK}"),
    # ailuro API tokens, GitHub/GitLab/Slack tokens, JSON web tokens
    (re.compile(r"\bail_[A-Za-z0-9_-]{6,}"), f"ail_{_MASK}"),
    (re.compile(r"\b(gh[pousr]_|glpat-|xox[abprs]-)[A-Za-z0-9_-]{10,}"), rf"\1{_MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), f"eyJ{_MASK}"),
    # AWS access key ids
    (re.compile(r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA))[A-Z0-9]{16}\b"), rf"\1{_MASK}"),
    # password=…, "api_key": "…", ?token=…&, aws_secret_access_key = …
    (
        re.compile(
            rf"(?i)(\b[\w.-]*(?:{_SECRET_NAMES})[\w.-]*[\"']?\s*[:=]\s*[\"']?)(?!{re.escape(_MASK)})[^\s\"',;&)}}]+"
        ),
        rf"\1{_MASK}",
    ),
)


def redact(text: str) -> str:
    """`text` with passwords in URLs, Authorization values, bearer/ailuro/AWS/… tokens and
    `key=value` secrets replaced by `***`."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


# --- cleaning -------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t]+")


def output_lines(tail: bytes, *, complete: bool = True) -> list[str]:
    """The tail of an output as clean lines: decoded (invalid UTF-8 replaced), terminal escapes and
    control characters removed, a carriage-return-redrawn line kept as its last drawing, each line
    cut at LINE_LIMIT. `complete=False`: the tail was cut from a longer output, so its first line
    is partial and dropped."""
    text = tail.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if not complete and len(lines) > 1:
        lines = lines[1:]
    out = []
    for raw in lines:
        line = raw.rstrip("\r")
        if "\r" in line:
            line = line[line.rfind("\r") + 1 :]
        line = line[:LINE_LIMIT]
        line = _ANSI.sub("", line)
        line = _CONTROL.sub("", line).replace("\t", "    ")
        out.append(line.rstrip())
    return out


def _printable(line: str) -> bool:
    """False for binary garbage: mostly replacement characters or non-printable symbols."""
    if not line.strip():
        return False
    bad = sum(1 for ch in line if ch == "\ufffd" or not ch.isprintable())
    return bad * 4 < len(line)


def bound(text: str, limit: int = DIAG_LIMIT, *, keep: str = "head") -> str:
    """`text` on one line, spaces collapsed, at most `limit` characters ("…" marks the cut)."""
    text = _SPACES.sub(" ", text.replace("\n", " ")).strip()
    if len(text) <= limit:
        return text
    if keep == "tail":
        return "…" + text[-(limit - 1) :]
    return text[: limit - 1] + "…"


# --- the message of an output -------------------------------------------------------------------


@dataclass(frozen=True)
class Extract:
    """The line of the output that says why the payload failed, and how it was found."""

    kind: str  # pipetask | out-of-memory | disk-full | exception | connection | error-line | tail | none
    message: str


_PIPETASK = re.compile(
    r"Execution of task '(?P<label>[^']*)' on quantum (?P<quantum>.*?) failed"
    r"(?:\.\s*Exception (?P<exception>.+))?$"
)
# mpexec's summary exceptions say only that something above failed.
_WRAPPER_EXCEPTIONS = re.compile(r"^(?:[\w.]+\.)?(?:MPGraphExecutorError|MPTimeoutError)\b")
_OOM = re.compile(
    r"\bMemoryError\b|std::bad_alloc|Cannot allocate memory|\bOut of memory\b|\bout-of-memory\b"
    r"|\boom[-_]kill|Killed process \d+|Unable to allocate [\d.]+ [KMGT]?i?B",
    re.IGNORECASE,
)
_DISK = re.compile(r"No space left on device|Disk quota exceeded|\bENOSPC\b|\bEDQUOT\b", re.IGNORECASE)
_CONNECTION = re.compile(
    r"Connection (?:refused|reset|timed out|aborted)|could not connect to server"
    r"|server closed the connection unexpectedly|Network is unreachable|No route to host"
    r"|Temporary failure in name resolution|Name or service not known|timed out",
    re.IGNORECASE,
)
_TRACEBACK = "Traceback (most recent call last):"
# `pkg.mod.SomeError: message` or `SomeError` alone, at the start of a line.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?::\s.*|:)?$")
_EXCEPTION_NAME = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Fault|Failure|Warning)\b(?::\s.*)?$"
)
_ERROR_WORDS = re.compile(
    r"\b(?:error|fatal|failed|failure|exception|aborted|abort|denied|cannot|could not|unable to|not found)\b",
    re.IGNORECASE,
)
# LSST logging (`{levelname} {asctime} {name} ({MDC[LABEL]})({filename}:{lineno}) - {message}`):
# keep the logger and the message.
_LSST_LOG = re.compile(r"^[A-Z]+ \S+ (?P<logger>[\w.]+) .*?\([\w.-]+:\d+\) - (?P<message>.*)$")


def _last(lines: list[str], pattern: re.Pattern[str]) -> str | None:
    for line in reversed(lines):
        if pattern.search(line) and _printable(line):
            return line
    return None


def _strip_log_prefix(line: str) -> str:
    match = _LSST_LOG.match(line)
    return f"{match['logger']}: {match['message']}" if match else line.strip()


def _exception_of_traceback(lines: list[str], header: int) -> str | None:
    """The exception line of the traceback whose header is `lines[header]`: the first line after it
    that is not indented (relative to the header: tracebacks inside exception groups are prefixed
    with `| `) and reads like `module.Error: message`."""
    prefix = lines[header][: lines[header].index(_TRACEBACK)]
    if prefix.endswith("Exception Group "):
        prefix = prefix[: -len("Exception Group ")].replace("+", "|")
    for raw in lines[header + 1 : header + 2000]:
        if prefix.strip() and raw.startswith(prefix.rstrip()):
            raw = raw[len(prefix) :] if raw.startswith(prefix) else ""
        if not raw or raw[0] in " \t" or not _printable(raw):
            continue
        if _EXCEPTION_LINE.match(raw):
            return raw
    return None


def _traceback_exception(lines: list[str], *, after: int = -1) -> str | None:
    """The exception line of the last traceback (with `after`: of the first traceback after that
    line)."""
    headers = [i for i, line in enumerate(lines) if i > after and line.rstrip().endswith(_TRACEBACK)]
    if not headers:
        return None
    return _exception_of_traceback(lines, headers[0] if after >= 0 else headers[-1])


def _pipetask(lines: list[str]) -> str | None:
    for index in range(len(lines) - 1, -1, -1):
        match = _PIPETASK.search(lines[index])
        if not match:
            continue
        head = f"Execution of task '{match['label']}' on quantum "
        tail = f" failed. Exception {match['exception']}" if match["exception"] else " failed"
        if not match["exception"]:
            # Older mpexec logs the failure with `_LOG.exception`: its traceback follows.
            exception = _traceback_exception(lines, after=index)
            if exception and not _WRAPPER_EXCEPTIONS.match(exception):
                tail = f" failed: {exception}"
        quantum = match["quantum"]
        room = DIAG_LIMIT - len(head) - len(tail)
        if len(quantum) > room:  # keep the exception, shorten the data id
            quantum = quantum[: max(room - 1, 8)] + "…"
        return head + quantum + tail
    return None


def extract_message(lines: list[str]) -> Extract:
    """The line that explains a failure, from the last lines of the payload's output.

    1. A Rubin `pipetask` quantum failure ("Execution of task 'isr' on quantum {…} failed.
       Exception …"): the task, its data id and the exception.
    2. Out of memory or disk full (`MemoryError`, `std::bad_alloc`, `No space left on device`…):
       the last such line, even when a later traceback follows from it.
    3. The exception line of the last Python traceback (`KeyError: 'x'`); mpexec's summary
       exceptions ("One or more tasks failed") only when nothing better is found.
    4. A connection failure (`Connection refused`, `timed out`…), then a line that reads like an
       exception, then a line with an error word (`error`, `failed`, `cannot`…).
    5. Otherwise the last non-empty lines.
    Every message is redacted and bounded to DIAG_LIMIT characters.
    """
    found = _pipetask(lines)
    if found:
        return Extract("pipetask", bound(redact(found)))
    for kind, pattern in (("out-of-memory", _OOM), ("disk-full", _DISK)):
        line = _last(lines, pattern)
        if line:
            return Extract(kind, bound(redact(_strip_log_prefix(line))))
    exception = _traceback_exception(lines)
    if exception and not _WRAPPER_EXCEPTIONS.match(exception):
        return Extract("exception", bound(redact(exception)))
    line = _last(lines, _CONNECTION)
    if line:
        return Extract("connection", bound(redact(_strip_log_prefix(line))))
    if exception:
        return Extract("exception", bound(redact(exception)))
    unindented = [line for line in lines if line and line[0] not in " \t"]
    line = _last(unindented, _EXCEPTION_NAME)
    if line:
        return Extract("exception", bound(redact(line)))
    line = _last(lines, _ERROR_WORDS)
    if line:
        return Extract("error-line", bound(redact(_strip_log_prefix(line))))
    last = [line.strip() for line in lines if _printable(line)][-FALLBACK_LINES:]
    if last:
        return Extract("tail", bound(redact(" | ".join(last)), keep="tail"))
    return Extract("none", "")


# --- the error fields of a final report ------------------------------------------------------------

# Signal → pilot3's code (pilot/common/errorcodes.py). SIGKILL has none: it is the kernel's
# out-of-memory killer more often than not, and `transExitCode` 137 already says so to the
# server's rules; with evidence of an OOM kill it becomes PILOT_ERROR_MEMORY.
SIGNAL_CODES: dict[int, int] = {
    signal.SIGTERM: PILOT_ERROR_SIGTERM,
    signal.SIGQUIT: PILOT_ERROR_SIGQUIT,
    signal.SIGSEGV: PILOT_ERROR_PAYLOAD_SIGSEGV,
    signal.SIGXCPU: PILOT_ERROR_SIGXCPU,
    signal.SIGBUS: PILOT_ERROR_SIGBUS,
    signal.SIGUSR1: PILOT_ERROR_SIGUSR1,
    signal.SIGINT: PILOT_ERROR_SIGINT,
}


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_signal(returncode: int) -> int | None:
    """The signal that ended a payload: a negative return code (the process itself), or 128 + N
    (bash reporting its child killed by N). An exit code above 128 chosen by the program reads the
    same way; shells make the same assumption."""
    if returncode < 0:
        return -returncode
    if 128 < returncode <= 128 + 64:
        return returncode - 128
    return None


@dataclass(frozen=True)
class Outcome:
    """How a payload ended, as the pilot saw it."""

    exit_code: int  # 128 + N when signal N ended it
    pilot_stop: tuple[int, str] | None = None  # (code, diag) when the pilot stopped the payload
    peak_rss_kb: int = 0
    memory_limit_kb: int | None = None
    oom_killed: bool = False  # the kernel's OOM killer killed a process of the payload


@dataclass(frozen=True)
class Diagnosis:
    """The error fields of a final report (v1 names in `fields`)."""

    trans_exit_code: int
    exe_error_code: int = 0
    exe_error_diag: str = ""
    pilot_error_code: int = 0
    pilot_error_diag: str = ""
    signal: int | None = None
    kind: str = "none"

    @property
    def failed(self) -> bool:
        return self.trans_exit_code != 0 or self.pilot_error_code != 0

    def fields(self) -> dict[str, Any]:
        return {
            "trans_exit_code": self.trans_exit_code,
            "exe_error_code": self.exe_error_code,
            "exe_error_diag": self.exe_error_diag,
            "pilot_error_code": self.pilot_error_code,
            "pilot_error_diag": self.pilot_error_diag,
        }


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def _memory_note(outcome: Outcome) -> str:
    if not outcome.peak_rss_kb:
        return ""
    limit = f" of {_mb(outcome.memory_limit_kb)} requested" if outcome.memory_limit_kb else ""
    return f"; peak RSS {outcome.peak_rss_kb} kB ({_mb(outcome.peak_rss_kb)}{limit})"


def diagnose(outcome: Outcome, lines: Iterable[str]) -> Diagnosis:
    """The error fields for a payload that ended as `outcome` after printing `lines` (its clean
    output tail, `output_lines`).

    1. Exit 0 and no stop by the pilot: no error.
    2. The pilot stopped it (memory, walltime, server kill, preemption): the pilot's code and diag;
       the exit code stays in transExitCode, the exe fields stay empty (the payload did not fail).
    3. A signal ended it: the signal's pilot code (SIGTERM 1201, SIGSEGV 1328, …; SIGKILL none, or
       1212 when the kernel's OOM killer did it: its counter rose, or the output says so), and an
       exe diag naming the signal, the measured peak memory for SIGKILL, and the output's
       explaining line.
    4. A non-zero exit: exeErrorCode = the exit code, exeErrorDiag = the explaining line of the
       output (`extract_message`), or "exit code N (no output)".
    """
    code = outcome.exit_code
    sig = exit_signal(code)
    if outcome.pilot_stop is not None:
        pilot_code, pilot_diag = outcome.pilot_stop
        return Diagnosis(
            trans_exit_code=code,
            pilot_error_code=pilot_code,
            pilot_error_diag=bound(redact(pilot_diag)),
            signal=sig,
            kind="pilot",
        )
    if code == 0:
        return Diagnosis(trans_exit_code=0)
    found = extract_message(list(lines))
    if sig is None:
        diag = found.message or f"exit code {code} (no output)"
        return Diagnosis(trans_exit_code=code, exe_error_code=code, exe_error_diag=diag, kind=found.kind)
    name = signal_name(sig)
    headline = f"payload killed by {name} (signal {sig}, exit {code})"
    pilot_code = SIGNAL_CODES.get(sig, 0 if sig == signal.SIGKILL else PILOT_ERROR_KILL_SIGNAL)
    pilot_diag = headline
    kind = "signal"
    if sig == signal.SIGKILL:
        headline += _memory_note(outcome)
        if outcome.oom_killed or found.kind == "out-of-memory":
            pilot_code = PILOT_ERROR_MEMORY
            pilot_diag = "payload killed by the kernel's out-of-memory killer" + _memory_note(outcome)
            kind = "out-of-memory"
    diag = f"{headline}: {found.message}" if found.message else headline
    return Diagnosis(
        trans_exit_code=code,
        exe_error_code=code,
        exe_error_diag=bound(diag),
        pilot_error_code=pilot_code,
        pilot_error_diag=bound(pilot_diag) if pilot_code else "",
        signal=sig,
        kind=kind,
    )
