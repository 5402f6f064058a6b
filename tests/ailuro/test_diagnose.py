"""The payload's error, extracted from its output and mapped to PanDA's error fields (pure).

Tracebacks are real: each is printed by a Python child process, as a payload would print it.
The last tests feed the fields through the server's own parsing and its default retry rules, so a
change on either side that breaks "a connection failure is retried, a KeyError is not" fails here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from ailuro.pilot.diagnose import (
    DIAG_LIMIT,
    Outcome,
    bound,
    diagnose,
    exit_signal,
    extract_message,
    output_lines,
    redact,
)
from ailuro.protocol import PILOT_ERROR_MEMORY, PILOT_ERROR_PAYLOAD_SIGSEGV, PILOT_ERROR_SIGTERM

PSYCOPG_REFUSED = (
    'sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "db" '
    "(172.18.0.2), port 5432 failed: Connection refused"
)


def python_stderr(code: str) -> bytes:
    """What a Python payload running `code` prints on stderr."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False)
    assert result.returncode != 0
    return result.stderr


SQLALCHEMY = """
import time
class OperationalError(Exception):
    pass
OperationalError.__module__ = "sqlalchemy.exc"
def connect():
    raise OperationalError(
        '(psycopg2.OperationalError) connection to server at "db" (172.18.0.2), port 5432 failed: '
        'Connection refused\\n\\tIs the server running on that host and accepting TCP/IP connections?'
        '\\n\\n(Background on this error at: https://sqlalche.me/e/20/e3q8)'
    )
print("loading butler", flush=True)
connect()
"""


def message(output: bytes | str) -> tuple[str, str]:
    raw = output.encode() if isinstance(output, str) else output
    found = extract_message(output_lines(raw))
    return found.kind, found.message


# --- Python tracebacks ------------------------------------------------------------------------------


def test_the_last_line_of_a_traceback_is_the_message() -> None:
    assert message(python_stderr("d = {}\nd['x']")) == ("exception", "KeyError: 'x'")


def test_a_multi_line_exception_message_gives_its_first_line() -> None:
    assert message(python_stderr(SQLALCHEMY)) == ("exception", PSYCOPG_REFUSED)


def test_a_chained_exception_gives_the_final_one() -> None:
    code = "try:\n    {}['x']\nexcept KeyError as e:\n    raise RuntimeError('lookup failed') from e"
    assert message(python_stderr(code)) == ("exception", "RuntimeError: lookup failed")


def test_an_exception_group_gives_the_group_line() -> None:
    code = "raise ExceptionGroup('two failed', [ValueError('bad 3'), KeyError('k')])"
    assert message(python_stderr(code)) == ("exception", "ExceptionGroup: two failed (2 sub-exceptions)")


def test_a_recursion_error_with_folded_frames() -> None:
    code = "def f(n):\n    return f(n + 1)\nf(0)"
    assert message(python_stderr(code)) == ("exception", "RecursionError: maximum recursion depth exceeded")


def test_a_traceback_whose_header_was_cut_off_still_gives_its_exception() -> None:
    tail = '  File "x.py", line 3, in f\n    return g()\nValueError: bad visit 42\n'
    assert message(tail) == ("exception", "ValueError: bad visit 42")


def test_output_after_the_traceback_does_not_hide_it() -> None:
    out = python_stderr("import sys\nprint('cleanup done', file=sys.stderr)\n{}['x']").decode()
    out += "INFO: uploading logs\nall done\n"
    assert message(out) == ("exception", "KeyError: 'x'")


# --- Rubin pipetask ---------------------------------------------------------------------------------

QUANTUM = "{instrument: 'HSC', detector: 42, visit: 1228, band: 'i', day_obs: 20140325}"
PIPETASK_FAILURE = f"""\
INFO 2025-04-11T11:24:30.123-07:00 lsst.ctrl.mpexec.cmdLineFwk ()(cmdLineFwk.py:1023) - QuantumGraph contains 1 quantum for 1 task
INFO 2025-04-11T11:24:31.000-07:00 lsst.calibrate (calibrate:{QUANTUM})(calibrate.py:488) - Measuring PSF
ERROR 2025-04-11T11:24:37.336-07:00 lsst.ctrl.mpexec.singleQuantumExecutor (calibrate:{QUANTUM})(singleQuantumExecutor.py:258) - Execution of task 'calibrate' on quantum {QUANTUM} failed. Exception RuntimeError: Cannot find any objects suitable for PSF determination
INFO 2025-04-11T11:24:37.400-07:00 lsst.ctrl.mpexec.mpGraphExecutor ()(mpGraphExecutor.py:561) - Executed 0 quanta successfully, 1 failed and 0 remain out of total 1 quanta.
ERROR 2025-04-11T11:24:37.401-07:00 lsst.daf.butler.cli.utils ()(utils.py:1163) - Caught an exception, details are in traceback:
Traceback (most recent call last):
  File "/opt/lsst/ctrl_mpexec/python/lsst/ctrl/mpexec/cli/cmd/commands.py", line 201, in run
    script.run(qgraphObj=qgraph, **kwargs)
  File "/opt/lsst/ctrl_mpexec/python/lsst/ctrl/mpexec/mpGraphExecutor.py", line 572, in execute
    raise MPGraphExecutorError("One or more tasks failed during execution.")
lsst.ctrl.mpexec.mpGraphExecutor.MPGraphExecutorError: One or more tasks failed during execution.
"""


def test_a_pipetask_quantum_failure_names_task_quantum_and_exception() -> None:
    assert message(PIPETASK_FAILURE) == (
        "pipetask",
        f"Execution of task 'calibrate' on quantum {QUANTUM} failed. Exception RuntimeError: "
        "Cannot find any objects suitable for PSF determination",
    )


def test_an_older_pipetask_failure_takes_the_exception_from_the_traceback_after_it() -> None:
    out = f"""\
ERROR 2022-01-01T00:00:00.000+00:00 lsst.ctrl.mpexec.singleQuantumExecutor (isr:{QUANTUM})(singleQuantumExecutor.py:193) - Execution of task 'isr' on quantum {QUANTUM} failed
Traceback (most recent call last):
  File "/opt/lsst/ip_isr/python/lsst/ip/isr/isrTask.py", line 900, in run
    raise ValueError("no bias for detector 42")
ValueError: no bias for detector 42
Traceback (most recent call last):
  File "/opt/lsst/ctrl_mpexec/python/lsst/ctrl/mpexec/mpGraphExecutor.py", line 572, in execute
lsst.ctrl.mpexec.mpGraphExecutor.MPGraphExecutorError: One or more tasks failed or timed out during execution.
"""
    assert message(out) == (
        "pipetask",
        f"Execution of task 'isr' on quantum {QUANTUM} failed: ValueError: no bias for detector 42",
    )


def test_a_huge_quantum_data_id_is_shortened_so_the_exception_fits() -> None:
    quantum = "{" + ", ".join(f"visit{i}: {i}" for i in range(200)) + "}"
    line = f"ERROR x lsst.ctrl.mpexec.singleQuantumExecutor ()(s.py:1) - Execution of task 'big' on quantum {quantum} failed. Exception KeyError: 'flux'"
    kind, text = message(line)
    assert kind == "pipetask"
    assert len(text) <= DIAG_LIMIT
    assert text.endswith("failed. Exception KeyError: 'flux'")


def test_only_the_summary_exception_of_pipetask_is_used_when_nothing_better_exists() -> None:
    tail = PIPETASK_FAILURE.splitlines()[-6:]
    assert message("\n".join(tail)) == (
        "exception",
        "lsst.ctrl.mpexec.mpGraphExecutor.MPGraphExecutorError: One or more tasks failed during execution.",
    )


# --- known patterns -----------------------------------------------------------------------------------


def test_a_python_memory_error_is_out_of_memory() -> None:
    kind, text = message(python_stderr("x = bytearray(2**62)"))
    assert (kind, text) == ("out-of-memory", "MemoryError")


def test_numpy_and_cxx_allocation_failures_are_out_of_memory() -> None:
    numpy = "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 3.20 GiB for an array with shape (20000, 21475)"
    assert message(numpy) == ("out-of-memory", numpy)
    cxx = "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc\n"
    assert message(cxx) == ("out-of-memory", "what(): std::bad_alloc")


def test_disk_full_wins_over_the_traceback_it_caused() -> None:
    out = "cp: error writing '/scratch/calexp.fits': No space left on device\n"
    out += python_stderr("raise ValueError('calexp.fits is truncated')").decode()
    assert message(out) == ("disk-full", "cp: error writing '/scratch/calexp.fits': No space left on device")


def test_a_connection_failure_outside_a_traceback() -> None:
    out = "fetching calibs\ncurl: (7) Failed to connect to db port 5432 after 0 ms: Connection refused\nretry 3 of 3\n"
    assert message(out) == (
        "connection",
        "curl: (7) Failed to connect to db port 5432 after 0 ms: Connection refused",
    )


def test_an_lsst_error_log_line_keeps_logger_and_message() -> None:
    out = (
        "INFO 2025-04-11T11:24:30.123-07:00 lsst.isr ()(isrTask.py:10) - starting\n"
        "ERROR 2025-04-11T11:24:31.000-07:00 lsst.isr (isr:{visit: 1})(isrTask.py:99) - cannot read the bias frame\n"
        "INFO 2025-04-11T11:24:31.100-07:00 lsst.isr ()(isrTask.py:12) - stopping\n"
    )
    assert message(out) == ("error-line", "lsst.isr: cannot read the bias frame")


def test_without_any_pattern_the_last_lines_are_the_message() -> None:
    out = "step 0\nstep 1\nstep 2\n\nstep 3 of 3\n\n"
    assert message(out) == ("tail", "step 1 | step 2 | step 3 of 3")


def test_no_output_gives_no_message() -> None:
    assert message(b"") == ("none", "")
    assert message(b"\n\n  \n") == ("none", "")


# --- hostile output -----------------------------------------------------------------------------------


def test_binary_garbage_gives_a_clean_bounded_message() -> None:
    garbage = os.urandom(64 * 1024)
    lines = output_lines(garbage)
    found = extract_message(lines)
    assert len(found.message) <= DIAG_LIMIT
    assert "\x00" not in found.message
    assert all(ch.isprintable() for ch in found.message)


def test_binary_garbage_before_a_traceback_does_not_hide_it() -> None:
    out = os.urandom(4096).replace(b"\n", b"") + b"\n" + python_stderr("{}['k']")
    assert message(out) == ("exception", "KeyError: 'k'")


def test_a_huge_line_is_cut_and_handled_quickly() -> None:
    huge = b"ValueError: " + b"x" * (10 * 2**20) + b"\n"
    started = time.monotonic()
    kind, text = message(huge)
    assert time.monotonic() - started < 2
    assert kind == "exception"
    assert len(text) == DIAG_LIMIT
    assert text.startswith("ValueError: xxx")
    assert text.endswith("…")


def test_many_short_lines_are_handled_quickly() -> None:
    out = b"Connection timed out? no, fine\n" * 100_000
    started = time.monotonic()
    message(out)
    assert time.monotonic() - started < 5


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    out = "Fehler: Datei für Bias nicht lesbar\n".encode("latin-1")
    kind, text = message(out)
    assert kind == "tail"
    assert text == "Fehler: Datei f\ufffdr Bias nicht lesbar"
    assert message(b"KeyError: '\xff\xfe'\n") == ("exception", "KeyError: '\ufffd\ufffd'")


def test_nul_bytes_terminal_colours_and_progress_redraws_are_cleaned() -> None:
    out = b"\x1b[31mERROR\x1b[0m: bad\x00 input\n 10%\r 50%\r100% done\n"
    lines = output_lines(out)
    assert lines[:2] == ["ERROR: bad input", "100% done"]


def test_a_cut_tail_drops_its_partial_first_line() -> None:
    assert output_lines(b"rror: partial\nreal line\n", complete=False) == ["real line", ""]


# --- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://butler:hunter2@db:5432/main failed", "postgresql://butler:***@db:5432/main failed"),
        ("Authorization: Bearer abc.def.ghi-jkl", "Authorization: ***"),
        ("headers={'Authorization': 'Basic dXNlcjpwYXNz'}", "headers={'Authorization': '***'}"),
        ("curl -H 'bearer 0123456789abcdef' x", "curl -H 'bearer ***' x"),
        ("token ail_3x4mpl3t0k3nvalue rejected", "token ail_*** rejected"),
        ("key AKIAIOSFODNN7EXAMPLE denied", "key AKIA*** denied"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = ***"),
        ('{"password": "s3cr3t", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("GET /o?X-Amz-Signature=abcdef123&X-Amz-Date=2025", "GET /o?X-Amz-Signature=***&X-Amz-Date=2025"),
        ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl here", "jwt eyJ*** here"),
        ("pushed with ghp_0123456789abcdefghijABCDEFGHIJ012345", "pushed with ghp_***"),
        ("KeyError: 'token'", "KeyError: 'token'"),
        ("no secret here: visit=42", "no secret here: visit=42"),
    ],
)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_secret_in_the_extracted_line_is_redacted() -> None:
    out = python_stderr("raise ConnectionError('cannot reach https://alice:pa55@s3.example.org/bucket')")
    assert message(out) == (
        "exception",
        "ConnectionError: cannot reach https://alice:***@s3.example.org/bucket",
    )


def test_bound_keeps_one_line_of_at_most_the_limit() -> None:
    assert bound("a\n  b\t c") == "a b c"
    assert bound("x" * 600) == "x" * 499 + "…"
    assert bound("x" * 600 + "end", keep="tail").endswith("xend")
    assert len(bound("x" * 600, keep="tail")) == DIAG_LIMIT


# --- the error fields -------------------------------------------------------------------------------


def test_the_signal_of_an_exit_code() -> None:
    assert exit_signal(-9) == 9
    assert exit_signal(143) == signal.SIGTERM
    assert exit_signal(1) is None
    assert exit_signal(128) is None
    assert exit_signal(255) is None


def fields(outcome: Outcome, output: str | bytes = b"") -> dict[str, Any]:
    raw = output.encode() if isinstance(output, str) else output
    return diagnose(outcome, output_lines(raw)).fields()


def test_a_finished_payload_has_no_error() -> None:
    assert fields(Outcome(exit_code=0), "all good\n") == {
        "trans_exit_code": 0,
        "exe_error_code": 0,
        "exe_error_diag": "",
        "pilot_error_code": 0,
        "pilot_error_diag": "",
    }


def test_a_traceback_and_exit_1_is_an_exe_error_with_the_exception_line() -> None:
    assert fields(Outcome(exit_code=1), python_stderr(SQLALCHEMY)) == {
        "trans_exit_code": 1,
        "exe_error_code": 1,
        "exe_error_diag": PSYCOPG_REFUSED,
        "pilot_error_code": 0,
        "pilot_error_diag": "",
    }


def test_a_silent_failure_says_so() -> None:
    assert fields(Outcome(exit_code=3))["exe_error_diag"] == "exit code 3 (no output)"


def test_a_pilot_stop_keeps_the_pilot_code_and_leaves_the_exe_fields_empty() -> None:
    stop = (PILOT_ERROR_MEMORY, "payload exceeded its memory limit: RSS 240000 kB > 204800 kB")
    assert fields(Outcome(exit_code=143, pilot_stop=stop), python_stderr("{}['x']")) == {
        "trans_exit_code": 143,
        "exe_error_code": 0,
        "exe_error_diag": "",
        "pilot_error_code": PILOT_ERROR_MEMORY,
        "pilot_error_diag": stop[1],
    }


def test_sigterm_from_outside_is_1201_with_exit_143() -> None:
    got = fields(Outcome(exit_code=143), "working on visit 12\n")
    assert got["trans_exit_code"] == 143
    assert got["pilot_error_code"] == PILOT_ERROR_SIGTERM
    assert got["exe_error_code"] == 143
    assert got["exe_error_diag"] == "payload killed by SIGTERM (signal 15, exit 143): working on visit 12"


def test_sigkill_carries_the_measured_peak_and_no_pilot_code() -> None:
    got = fields(Outcome(exit_code=137, peak_rss_kb=430_080, memory_limit_kb=200 * 1024))
    assert got["pilot_error_code"] == 0
    assert got["exe_error_code"] == 137
    assert got["exe_error_diag"] == (
        "payload killed by SIGKILL (signal 9, exit 137); peak RSS 430080 kB (420 MB of 200 MB requested)"
    )


def test_sigkill_by_the_kernels_oom_killer_is_1212() -> None:
    got = fields(Outcome(exit_code=137, peak_rss_kb=430_080, memory_limit_kb=None, oom_killed=True))
    assert got["pilot_error_code"] == PILOT_ERROR_MEMORY
    assert got["pilot_error_diag"] == (
        "payload killed by the kernel's out-of-memory killer; peak RSS 430080 kB (420 MB)"
    )


def test_a_segfault_is_the_payloads_own_sigsegv_code() -> None:
    got = fields(Outcome(exit_code=139), "Segmentation fault (core dumped)\n")
    assert got["pilot_error_code"] == PILOT_ERROR_PAYLOAD_SIGSEGV
    assert got["exe_error_diag"].startswith("payload killed by SIGSEGV (signal 11, exit 139)")


# --- the server's default rules read these fields as intended -----------------------------------------


def server_decision(update_fields: dict[str, Any]) -> str:
    """What the server's default retry rules decide for a failed attempt reporting these fields,
    through the server's own parsing of a v1 update_job."""
    from dispatcher.protocol.pilot import pilot_update
    from dispatcher.retry import DEFAULT_RULES, Rule, retry_decide

    params = {"job_id": 1, "attempt_nr": 1, "job_status": "failed", **update_fields}
    errors = pilot_update(params).errors
    rules = [
        Rule(**{k: v for k, v in rule.items() if k not in {"order", "description"}})  # type: ignore[arg-type]
        for rule in sorted(DEFAULT_RULES, key=lambda r: int(str(r["order"])))
    ]
    decision = retry_decide(
        errors=errors, rules=rules, label="x", attemptnr=1, max_attempts=3, memory_mb=200, max_memory_mb=4000
    )
    return decision.action


@pytest.mark.parametrize(
    ("outcome", "output", "action"),
    [
        (Outcome(exit_code=1), SQLALCHEMY, "retry"),
        (Outcome(exit_code=1), "d = {}\nd['x']", "no_retry"),
        (Outcome(exit_code=1), "x = bytearray(2**62)", "increase_memory"),
        (Outcome(exit_code=137, peak_rss_kb=430_080), "", "increase_memory"),
        (Outcome(exit_code=137, oom_killed=True), "", "increase_memory"),
        (Outcome(exit_code=143, pilot_stop=(PILOT_ERROR_MEMORY, "exceeded")), "", "increase_memory"),
        (Outcome(exit_code=143), "", "retry"),
        (Outcome(exit_code=139), "", "no_retry"),
    ],
)
def test_the_servers_default_rules_decide_as_intended(outcome: Outcome, output: str, action: str) -> None:
    raw = python_stderr(output) if output else b""
    assert server_decision(diagnose(outcome, output_lines(raw)).fields()) == action
