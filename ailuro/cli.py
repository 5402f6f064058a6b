"""The `ailuro` command line. Imports nothing from Django: it runs on laptops and worker nodes.

Client commands talk to the REST API (`ailuro.http`) with the configuration of `ailuro.config`;
each prints a table for people, or the server's JSON with `--json` for scripts. Exit codes: 0 done,
1 the server refused or could not be reached, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ailuro import __version__, units
from ailuro.campaign_cli import add_campaign_parser
from ailuro.config import ConfigError, config_load
from ailuro.http import ApiError, Client
from ailuro.logs import cmd_logs
from ailuro.pilot.cli import add_pilot_parser
from ailuro.protocol import FINAL_WORKFLOW_STATES
from ailuro.render import console as _console
from ailuro.render import print_json as _print_json
from ailuro.render import state as _state


def _project_root() -> Path:
    """The server checkout: $AILURO_HOME, else the nearest folder above the cwd with manage.py."""
    home = os.environ.get("AILURO_HOME")
    if home:
        return Path(home)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "manage.py").exists() and (folder / "config").is_dir():
            return folder
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "manage.py").exists():
        return candidate
    raise SystemExit(
        "ailuro up: cannot find the ailuro server checkout; run it from the checkout or set AILURO_HOME"
    )


def cmd_up(args: argparse.Namespace) -> int:
    """Run the embedded system. The server lives in the checkout, so hand over to manage.py."""
    root = _project_root()
    command = [sys.executable, str(root / "manage.py"), "up", "--host", args.host, "--port", str(args.port)]
    if args.no_demo:
        command.append("--no-demo")
    if args.exit_after:
        command += ["--exit-after", str(args.exit_after)]
    # manage.py up owns the shutdown of everything it started. On Ctrl-C the terminal signals the
    # whole foreground group; a supervisor (systemd, a container runtime, `kill <pid>`) signals this
    # process alone, so SIGINT and SIGTERM are passed on, and here we wait for the stop to finish.
    child = subprocess.Popen(command, cwd=root)  # noqa: S603  (our interpreter running our manage.py)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- client commands -------------------------------------------------------------------------

STATE_ORDER = [
    "defined",
    "activated",
    "sent",
    "starting",
    "running",
    "holding",
    "finished",
    "failed",
    "cancelled",
    "closed",
    "pruned",
]
# Above this size a submission shows an upload progress bar (when stderr is a terminal).
PROGRESS_BYTES = 1024 * 1024


def _client(args: argparse.Namespace) -> Client:
    return Client(config_load(url=args.url, token_file=args.token_file))


def _counts_table(title: str, rows: Iterable[tuple[str, dict[str, int]]]) -> Any:
    from rich.table import Table

    rows = list(rows)
    present = [s for s in STATE_ORDER if any(counts.get(s) for _, counts in rows)]
    table = Table(title=title, title_justify="left")
    table.add_column("label")
    table.add_column("total", justify="right")
    for state in present:
        table.add_column(_state(state), justify="right")
    table.add_column("done %", justify="right")
    for name, counts in rows:
        total = sum(counts.get(s, 0) for s in STATE_ORDER)
        done = counts.get("finished", 0)
        table.add_row(
            name,
            str(total),
            *(str(counts.get(s, 0)) for s in present),
            f"{100 * done / total:.0f}" if total else "-",
        )
    return table


def cmd_ping(args: argparse.Namespace) -> int:
    client = _client(args)
    started = time.monotonic()
    answer = client.get("ping/")
    elapsed = time.monotonic() - started
    if args.json:
        _print_json({**answer, "url": client.config.url, "seconds": round(elapsed, 4)})
    else:
        roles = ", ".join(answer.get("roles", [])) or "none"
        print(
            f"{client.config.url}: ailuro {answer.get('version')}, you are {answer.get('user') or 'anonymous'} "
            f"({roles}), {1000 * elapsed:.0f} ms"
        )
    return 0


def _content_type(path: Path, body: bytes) -> str:
    if path.suffix.lower() == ".json" or body.lstrip()[:1] in (b"{", b"["):
        return "application/json"
    return "application/yaml"


class _YamlSyntaxError(Exception):
    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


def _yaml_to_json(body: bytes) -> bytes:
    """A big YAML spec as JSON, parsed here instead of on the server (JSON parses ~20x faster
    there). Timestamps stay strings, as the server's loader keeps them."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    try:
        data = yaml.load(body, Loader=Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        where = f" at line {line}, column {column}" if mark else ""
        raise _YamlSyntaxError(f"malformed YAML{where}: {exc.problem or exc.context}", line, column) from None
    except yaml.YAMLError as exc:
        raise _YamlSyntaxError(f"malformed YAML: {exc}", None, None) from None
    try:
        return json.dumps(data, allow_nan=False).encode()
    except (TypeError, ValueError):
        # Values JSON cannot hold (binary, NaN): let the server refuse them with its own message.
        return body


def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.spec)
    try:
        body = sys.stdin.buffer.read() if args.spec == "-" else path.read_bytes()
    except OSError as exc:
        print(f"ailuro submit: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    client = _client(args)
    params = {"name": args.name} if args.name else None
    content_type = _content_type(path, body)
    if content_type == "application/yaml" and len(body) >= PROGRESS_BYTES:
        try:
            converted = _yaml_to_json(body)
        except _YamlSyntaxError as exc:
            raise ApiError(0, f"{path}: {exc}", line=exc.line, column=exc.column) from None
        if converted is not body:
            body, content_type = converted, "application/json"
    if len(body) >= PROGRESS_BYTES and sys.stderr.isatty() and not args.json:
        from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TransferSpeedColumn

        with Progress(
            SpinnerColumn(),
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=_console(stderr=True),
            transient=True,
        ) as progress:
            task = progress.add_task(f"uploading {path.name}", total=len(body))
            sent = 0

            def advance(n: int) -> None:
                nonlocal sent
                sent += n
                progress.advance(task, n)
                if sent >= len(body):
                    # The server validates and writes the whole DAG before it answers.
                    progress.update(task, description="server checking and writing the DAG")

            answer = client.upload(
                "workflows/", body, content_type=content_type, params=params, progress=advance
            )
    else:
        answer = client.upload("workflows/", body, content_type=content_type, params=params)
    if args.json:
        _print_json(answer)
    else:
        jobs = sum(answer.get("counts", {}).values())
        print(f"workflow {answer['id']} ({answer['name']}) submitted: {jobs} jobs")
    return 0


def _status_view(detail: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    counts = detail.get("counts", {})
    total = sum(counts.values())
    header = Text.from_markup(
        f"workflow [bold]{detail['id']}[/] {detail['name']} · {_state(detail['status'])} · "
        f"{detail.get('produsername', '')} · priority {detail.get('priority')} · {total} jobs"
    )
    rows = [
        (t["label"] + (f" #{t['chunk']}" if t.get("chunk") else ""), t.get("counts", {}))
        for t in detail.get("tasks", [])
    ]
    return Group(header, _counts_table("", rows))


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.workflow is None:
        params: dict[str, Any] = {"limit": args.limit}
        if not args.all:
            params["produsername"] = client.get("ping/").get("user", "")
        items = list(client.paginate("workflows/", params, limit=args.limit))
        if args.json:
            _print_json(items)
            return 0
        from rich.table import Table

        table = Table(title="workflows", title_justify="left")
        numbers = ("id", "jobs", "finished", "failed", "pruned")
        for column in ("id", "name", "owner", "status", *numbers[1:], "created"):
            table.add_column(column, justify="right" if column in numbers else "left")
        for wf in items:
            counts = wf.get("counts", {})
            table.add_row(
                str(wf["id"]),
                wf["name"],
                wf.get("produsername", ""),
                _state(wf["status"]),
                str(sum(counts.values())),
                str(counts.get("finished", 0)),
                str(counts.get("failed", 0)),  # as the pages count them: pruned apart
                str(counts.get("pruned", 0)),
                str(wf.get("created_at", ""))[:19].replace("T", " "),
            )
        _console().print(table)
        return 0
    path = f"workflows/{args.workflow}/"
    if not args.watch:
        detail = client.get(path)
        if args.json:
            _print_json(detail)
        else:
            _console().print(_status_view(detail))
        return 0
    return _watch(lambda: client.get(path), args)


def _watch(fetch: Callable[[], dict[str, Any]], args: argparse.Namespace) -> int:
    """Refresh until the workflow is final (or Ctrl-C); with --json, one JSON line per refresh."""
    deadline = time.monotonic() + args.timeout if args.timeout else None
    if args.json:
        while True:
            detail = fetch()
            sys.stdout.write(json.dumps(detail, sort_keys=True) + "\n")
            sys.stdout.flush()
            if detail["status"] in FINAL_WORKFLOW_STATES or (deadline and time.monotonic() >= deadline):
                return 0
            time.sleep(args.interval)
    from rich.live import Live

    detail = fetch()
    try:
        with Live(_status_view(detail), console=_console(), refresh_per_second=4) as live:
            while detail["status"] not in FINAL_WORKFLOW_STATES:
                if deadline and time.monotonic() >= deadline:
                    break
                time.sleep(args.interval)
                detail = fetch()
                live.update(_status_view(detail))
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    report = _client(args).get(f"workflows/{args.workflow}/report/")
    if args.json:
        _print_json(report)
        return 0
    rows = [(row["label"], row) for row in report["labels"]]
    rows.append(("TOTAL", report["total"]))
    title = f"workflow {report['workflow']} {report.get('name', '')} · {report['status']}"
    _console().print(_counts_table(title, rows))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"workflow": args.workflow, "limit": min(args.limit, 1000)}
    if args.status:
        params["jobstatus"] = args.status
    if args.label:
        params["label"] = args.label
    if args.site:
        params["computingsite"] = args.site
    items = list(_client(args).paginate("jobs/", params, limit=args.limit))
    if args.json:
        _print_json(items)
        return 0
    from rich.table import Table

    table = Table(title=f"jobs of workflow {args.workflow}", title_justify="left")
    # Memory as the monitor shows it (`ailuro.units`): the request and the measured peak RSS.
    right = ("pandaid", "attempt", "memory", "peak RSS")
    for column in ("pandaid", "name", "label", "status", "attempt", "site", "memory", "peak RSS", "error"):
        table.add_column(
            column,
            justify="right" if column in right else "left",
            no_wrap=column in ("pandaid", "status", "memory", "peak RSS"),
        )
    for job in items:
        error = ""
        for family in ("piloterror", "exeerror"):
            if job.get(f"{family}code"):
                error = f"{family[:-5]}:{job[f'{family}code']} {job.get(f'{family}diag', '')}".strip()
                break
        table.add_row(
            str(job["pandaid"]),
            job["name"],
            job["label"],
            _state(job["jobstatus"]),
            str(job["attemptnr"]),
            job.get("computingsite") or "",
            units.memory_text_mb(job["request_memory_mb"]),
            units.memory_text(job.get("max_rss_kb")),
            error[:60],
        )
    _console().print(table)
    return 0


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if getattr(args, "label", None):
        body["labels"] = list(args.label)
    if getattr(args, "pandaid", None):
        body["pandaids"] = list(args.pandaid)
    if getattr(args, "status", None):
        body["jobstatus"] = [s for s in args.status.split("|") if s]
    return body


def _action(
    verb: str, path: str, body_of: Callable[[argparse.Namespace], dict[str, Any]]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        answer = _client(args).post(f"workflows/{args.workflow}/{path}/", body_of(args))
        if args.json:
            _print_json(answer)
        else:
            parts = ", ".join(f"{k} {v}" for k, v in answer.items() if k != "workflow")
            print(f"workflow {args.workflow}: {verb}: {parts}")
        return 0

    return run


def _priority_arg(text: str) -> str:
    """N, +N or -N, checked when parsed: anything else is a usage error (exit 2), not a traceback."""
    if not text.lstrip("+-").isdigit() or text[:2] in ("++", "--", "+-", "-+"):
        raise argparse.ArgumentTypeError(f"priority must be N, +N or -N (whole numbers), got {text!r}")
    return text


def _priority_body(args: argparse.Namespace) -> dict[str, Any]:
    text = str(args.priority)
    if text.startswith(("+", "-")):
        return {"delta": int(text)}
    return {"priority": int(text)}


def _memory_body(args: argparse.Namespace) -> dict[str, Any]:
    return {**_selection(args), "memory_mb": args.memory_mb}


def cmd_login(args: argparse.Namespace) -> int:
    """Device-flow login (or --refresh); the token goes to a 0600 file the other commands read."""
    import requests

    from ailuro import auth

    path = auth.token_file_path(args.token_file)
    try:
        if args.refresh:
            data = auth.refresh(auth.token_file_read(path))
        else:
            issuer, client_id, audience = args.issuer, args.client_id, args.audience
            if args.server and not issuer:
                config = auth.server_auth_config(args.server)
                issuer, client_id = config["issuer"], client_id or config["client_id"]
                audience = audience or config["audience"]
            if not issuer or not client_id:
                raise auth.LoginError(
                    "give --server, or --issuer and --client-id (or AILURO_OIDC_* variables)"
                )
            data = auth.device_login(
                issuer=issuer,
                client_id=client_id,
                audience=audience,
                show=lambda line: print(line, flush=True),
            )
        auth.token_file_write(path, data)
    except auth.LoginError as exc:
        print(f"ailuro login: {exc}", file=sys.stderr)
        return 1
    print(f"token saved to {path}", flush=True)
    if args.server:
        who = requests.get(
            f"{args.server.rstrip('/')}/api/v1/whoami/",
            headers={"Authorization": f"Bearer {data['access_token']}"},
            timeout=auth.TIMEOUT_S,
        )
        if who.status_code != 200:
            print(f"ailuro login: the server refused the token (HTTP {who.status_code})", file=sys.stderr)
            return 1
        body = who.json()
        print(f"logged in to {args.server} as {body['username']} (roles: {', '.join(body['roles'])})")
    return 0


def add_login_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    login = sub.add_parser("login", help="log in with the site's identity provider (OIDC device flow)")
    login.add_argument("--server", default=os.environ.get("AILURO_SERVER", ""), help="ailuro server URL")
    login.add_argument("--issuer", default=os.environ.get("AILURO_OIDC_ISSUER", ""))
    login.add_argument("--client-id", default=os.environ.get("AILURO_OIDC_CLIENT_ID", ""))
    login.add_argument("--audience", default=os.environ.get("AILURO_OIDC_AUDIENCE", ""))
    login.add_argument(
        "--token-file", default=None, help="default: $AILURO_TOKEN_FILE or ~/.config/ailuro/token.json"
    )
    login.add_argument("--refresh", action="store_true", help="renew the stored token without a new login")
    login.set_defaults(func=cmd_login)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ailuro", description="ailuro workload management: client, pilot and embedded run"
    )
    parser.add_argument("--version", action="version", version=f"ailuro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the embedded system (web, loops, local pilots) with a demo workflow")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--no-demo", action="store_true")
    up.add_argument("--exit-after", type=float, default=0, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="server URL (default: config file, $AILURO_URL, http://127.0.0.1:8000)")
    common.add_argument("--token-file", help="file holding the API token (default: ~/.config/ailuro/token)")
    common.add_argument("--json", action="store_true", help="print the server's JSON (for scripts)")

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, parents=[common])
        command.set_defaults(func=func)
        return command

    add("ping", "check the server and who you are", cmd_ping)
    submit = add("submit", "submit a workflow spec (YAML or JSON file, - for stdin)", cmd_submit)
    submit.add_argument("spec")
    submit.add_argument("--name", help="workflow name (overrides the spec's)")
    status = add("status", "a workflow's state per label, or your recent workflows", cmd_status)
    status.add_argument("workflow", nargs="?", type=int)
    status.add_argument("--watch", action="store_true", help="refresh until the workflow is final")
    status.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (--watch)")
    status.add_argument("--timeout", type=float, default=0, help="stop watching after this many seconds")
    status.add_argument("--all", action="store_true", help="everyone's workflows, not only yours")
    status.add_argument("--limit", type=int, default=20)
    report = add("report", "per-label job counts by state (like bps report)", cmd_report)
    report.add_argument("workflow", type=int)
    jobs = add("jobs", "list a workflow's jobs", cmd_jobs)
    jobs.add_argument("workflow", type=int)
    jobs.add_argument("--status", help="jobstatus filter, e.g. failed or failed|pruned")
    jobs.add_argument("--label")
    jobs.add_argument("--site", help="computingsite filter")
    jobs.add_argument("--limit", type=int, default=100)
    logs = add("logs", "print a job's payload output", cmd_logs)
    logs.add_argument("pandaid", type=int)
    logs.add_argument("--attempt", type=int, help="attempt number (default: the current one)")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new output until the job is final"
    )
    logs.add_argument("--interval", type=float, default=2.0, help="seconds between polls (--follow)")
    for name, verb, help_text in (
        ("cancel", "cancelled", "cancel a workflow's unfinished jobs"),
        ("retry", "retried", "retry failed jobs and the jobs pruned below them"),
        ("restart", "restarted", "run failed, cancelled and pruned jobs again (never finished ones)"),
    ):
        command = add(name, help_text, _action(verb, name, _selection))
        command.add_argument("workflow", type=int)
        command.add_argument("--label", action="append", help="only jobs of this label (repeatable)")
        command.add_argument("--pandaid", action="append", type=int, help="only this job (repeatable)")
        command.add_argument("--status", help="only jobs in these states, e.g. failed or failed|pruned")
    for name, verb, help_text in (
        ("pause", "paused", "hold a workflow's tasks: nothing new is dispatched, running jobs finish"),
        ("resume", "resumed", "release a paused workflow's tasks"),
    ):
        command = add(name, help_text, _action(verb, name, _selection))
        command.add_argument("workflow", type=int)
        command.add_argument("--label", action="append", help="only this label's tasks (repeatable)")
    priority = add(
        "priority",
        "set a workflow's priority (N) or raise/lower it (+N / -N)",
        _action("priority", "boost-priority", _priority_body),
    )
    priority.add_argument("workflow", type=int)
    priority.add_argument("priority", type=_priority_arg, help="N, +N or -N")
    memory = add(
        "set-memory",
        "set the memory request of a workflow's waiting or failed jobs",
        _action("memory set", "set-memory", _memory_body),
    )
    memory.add_argument("workflow", type=int)
    memory.add_argument("memory_mb", type=int)
    memory.add_argument("--label", action="append", help="only jobs of this label (repeatable)")
    memory.add_argument("--pandaid", action="append", type=int, help="only this job (repeatable)")
    memory.add_argument("--status", help="only jobs in these states, e.g. failed")
    add_campaign_parser(sub, common)
    add_pilot_parser(sub)
    add_login_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"ailuro: configuration: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        if getattr(args, "json", False):
            error = {"status": exc.status, "detail": exc.detail, "field": exc.field}
            if exc.line is not None:
                error.update(line=exc.line, column=exc.column)
            sys.stdout.write(json.dumps({"error": error}) + "\n")
        else:
            print(f"ailuro {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
