"""prun's job parameters (the arguments of PanDA's `runGen` transformation) as an ailuro command.

Pure: text in, shell text out, no ORM and no I/O. prun sends its payload as runGen arguments:
`-j "" --sourceURL ${SURL} -r <dir> -a <sandbox> -p "<url-quoted exec>"` (and `-o {...}` for
declared outputs). A PanDA worker runs runGen, which fetches the sandbox from the server's cache,
unpacks it, changes into `-r` and runs the exec. ailuro's pilot runs a job's command with
`/bin/bash -c`, so the same steps are written out as a short script (`runner_command`):

    set -e
    python3 -c '<urlretrieve>' '<source URL>/cache/<sandbox>' '<sandbox>'
    tar -xzf '<sandbox>'
    cd '<dir>'
    set +e
    <exec>

The job's exit code is the exec's. Every value taken from the client except the exec itself is
shell-quoted; the exec is the user's shell command by design (only identities allowed to submit
get here). Options that would need input datasets are refused, never dropped silently.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import unquote

# A sandbox name as the cache serves it (pandacompat.cache.CACHE_NAME, repeated to stay pure).
_SANDBOX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
# Options runGen takes that change nothing on an ailuro worker: -j (the release; no Athena),
# -o (output map: outputs stay in the job's work directory, nothing is staged out), -l (a lib
# archive of a build job; prun --noBuild sends none).
_IGNORED_WITH_VALUE = frozenset({"-j", "-o", "-l", "--sourceURL"})
# Options that name input data (files, datasets, maps): they need Rucio.
_INPUT_OPTIONS = frozenset({"-i", "--inMap", "--inputGUIDs", "--writeInputToTxt", "--dbrFile", "--dbrRun"})
MAX_PARAMETERS_CHARS = 64 * 1024

_FETCH = "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])"


class RunGenRefused(ValueError):
    """Job parameters ailuro cannot run; the message names the option."""


@dataclass(frozen=True)
class RunGenArgs:
    exec_command: str
    sandbox: str | None = None
    workdir: str = "."
    source_url: str | None = None


def rungen_parse(parameters: str) -> RunGenArgs:
    """The runGen arguments of `parameters` (after ${SURL} was substituted)."""
    if len(parameters) > MAX_PARAMETERS_CHARS:
        raise RunGenRefused(f"job parameters longer than {MAX_PARAMETERS_CHARS} characters")
    try:
        words = shlex.split(parameters)
    except ValueError as exc:
        raise RunGenRefused(f"job parameters are not valid shell words: {exc}") from None
    exec_command: str | None = None
    sandbox: str | None = None
    workdir = "."
    source_url: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if word in _INPUT_OPTIONS:
            raise RunGenRefused(f"option {word} needs input datasets (Rucio), which are not supported")
        if word in ("-p", "-a", "-r") or word in _IGNORED_WITH_VALUE:
            if i + 1 >= len(words):
                raise RunGenRefused(f"option {word} has no value")
            value = words[i + 1]
            if word == "-p":
                exec_command = unquote(value)
            elif word == "-a":
                sandbox = value
            elif word == "-r":
                workdir = value
            elif word == "--sourceURL":
                source_url = value
            i += 2
            continue
        raise RunGenRefused(f"job parameter {word[:60]!r} is not understood by this server")
    if not exec_command or not exec_command.strip():
        raise RunGenRefused("job parameters carry no command to run (-p)")
    if sandbox is not None and (not _SANDBOX.fullmatch(sandbox) or ".." in sandbox):
        raise RunGenRefused(f"sandbox name {sandbox[:80]!r} is not a cache file name")
    if workdir.startswith("/") or ".." in workdir.split("/"):
        raise RunGenRefused(f"run directory {workdir[:80]!r} must stay inside the job's work directory")
    return RunGenArgs(exec_command=exec_command, sandbox=sandbox, workdir=workdir, source_url=source_url)


def runner_command(args: RunGenArgs, *, source_url: str) -> str:
    """The shell script an ailuro pilot runs for `args`; the sandbox comes from
    `<source_url>/cache/<sandbox>` (the server's own URL, never the client's)."""
    lines = ["set -e"]
    if args.sandbox:
        url = f"{source_url.rstrip('/')}/cache/{args.sandbox}"
        lines.append(f"python3 -c {shlex.quote(_FETCH)} {shlex.quote(url)} {shlex.quote(args.sandbox)}")
        lines.append(f"tar -xzf {shlex.quote(args.sandbox)}")
    if args.workdir not in ("", "."):
        lines.append(f"cd {shlex.quote(args.workdir)}")
    lines.append("set +e")
    lines.append(args.exec_command)
    return "\n".join(lines)
