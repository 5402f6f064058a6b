"""`ailuro campaign …`: the campaign verbs of the REST API from the command line. No Django here.

Server and credentials as for every client command (`ailuro.config`: --url/--token-file, then
$AILURO_URL/$AILURO_TOKEN/$AILURO_TOKEN_FILE, then the config file; `ailuro login` tokens work).
Every command prints tables for people, or the server's JSON with `--json` (before or after the
subcommand) for scripts; `--preview` asks what would happen without acting. Lists follow the
API's keyset pages up to `--limit`. Choices (`--status`, verbs) are checked before any call, with
the closest valid value suggested. Exit status: 0 done, 1 refused or rejected by the server (the
message names the field), 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ailuro.config import config_load
from ailuro.http import Client
from ailuro.render import console, print_json, state, when

CAMPAIGN_STATES = ("draft", "running", "paused", "done", "failed", "rejected")
CAMPAIGN_VERBS = ("launch", "pause", "resume")
STEP_VERBS = ("pause", "resume", "release")
GROUP_VERBS = ("restart", "rescue", "retry", "accept", "reject", "pause", "resume")


def _client(args: argparse.Namespace) -> Client:
    return Client(config_load(url=args.url, token_file=args.token_file))


def _choice(name: str, allowed: Sequence[str]) -> Callable[[str], str]:
    """An argparse type accepting one of `allowed`; otherwise a usage error naming the choices and
    the closest one (`faild` → did you mean `failed`?)."""

    def parse(text: str) -> str:
        if text in allowed:
            return text
        close = difflib.get_close_matches(text, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise argparse.ArgumentTypeError(f"{name} must be one of {', '.join(allowed)}, got {text!r}{hint}")

    parse.__name__ = name
    return parse


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, got {text!r}")
    return int(text)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def _percent(done: int, total: int) -> str:
    return f"{100 * done // total}" if total else "-"


# --- views -------------------------------------------------------------------------------------


def _campaigns_view(items: list[dict[str, Any]]) -> Any:
    rows = []
    for c in items:
        g = c.get("groups") or {}
        rows.append(
            (
                c["id"],
                c["name"],
                c["owner"],
                state(c["status"]),
                c["version"],
                g.get("total"),
                g.get("accepted"),
                g.get("running"),
                g.get("failed"),
                when(c.get("created_at")),
            )
        )
    columns = (
        "id",
        "name",
        "owner",
        "status",
        "version",
        "groups",
        "accepted",
        "running",
        "failed",
        "created",
    )
    return _table("campaigns", columns, rows, {"id", "version", "groups", "accepted", "running", "failed"})


def _campaign_view(c: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    progress = c.get("progress") or {}
    eta = f" · eta {when(progress['eta'])}" if progress.get("eta") else ""
    header = Text.from_markup(
        f"campaign [bold]{c['id']}[/] {c['name']} · {state(c['status'])} · {c['owner']} · version "
        f"{c['version']} · {progress.get('percent', 0)}% of {progress.get('jobs_total', 0)} jobs{eta}"
    )
    steps = _table(
        "steps",
        ("step", "status", "breakpoint", "groups", "jobs", "done %", "eta"),
        [
            (
                s["name"],
                state(s["status"]),
                "yes" if s["breakpoint"] else "",
                len(s["groups"]),
                s["progress"]["jobs_total"],
                _percent(s["progress"]["jobs_done"], s["progress"]["jobs_total"]),
                when(s["progress"].get("eta")),
            )
            for s in c.get("steps", [])
        ],
        {"groups", "jobs", "done %"},
    )
    groups = _table(
        "groups",
        ("id", "step", "group", "status", "attempt", "data ids", "jobs", "done %", "stalled"),
        [
            (
                g["id"],
                s["name"],
                g["name"],
                state(g["status"]),
                g["attempt"],
                g["data_ids"],
                g["jobs_total"],
                _percent(g["jobs_done"], g["jobs_total"]),
                "stalled" if g["stalled"] else "",
            )
            for s in c.get("steps", [])
            for g in s["groups"]
        ],
        {"id", "attempt", "data ids", "jobs", "done %"},
    )
    if not c.get("steps"):
        note = f"not launched: `ailuro campaign dry-run {c['id']}` shows the steps and groups a launch makes"
        return Group(header, Text(note))
    parts: list[Any] = [header, steps]
    if any(s["groups"] for s in c["steps"]):
        parts.append(groups)
    return Group(*parts)


def _dry_run_view(d: dict[str, Any], title: str = "dry run") -> Any:
    from rich.console import Group
    from rich.text import Text

    table = _table(
        f"{title}: {d['data_ids']} data ids, {d['core_hours']} core-hours",
        ("step", "groups", "jobs", "largest group", "core-hours", "first groups"),
        [
            (
                s["name"],
                s["groups"],
                s["jobs"],
                s["largest_group_jobs"],
                s["core_hours"],
                ", ".join(s["group_names"][:5]) + (" …" if s["groups"] > 5 else ""),
            )
            for s in d.get("steps", [])
        ],
        {"groups", "jobs", "largest group", "core-hours"},
    )
    lines = [Text.from_markup(f"[red]error[/]: {e}") for e in d.get("errors", [])]
    lines += [Text.from_markup(f"[yellow]warning[/]: {w}") for w in d.get("warnings", [])]
    return Group(table, *lines)


def _log_view(items: list[dict[str, Any]], campaign_id: int) -> Any:
    return _table(
        f"audit log of campaign {campaign_id}",
        ("time", "actor", "verb", "object", "result", "message"),
        [
            (
                when(a["time"]),
                a["actor"],
                a["verb"],
                f"{a['object_type']} {a['object_id']}",
                state(a["result"]),
                a["message"],
            )
            for a in items
        ],
        set(),
    )


def _group_view(g: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    header = Text.from_markup(
        f"group [bold]{g['id']}[/] {g['name']} of step {g['step']} · {state(g['status'])} · attempt "
        f"{g['attempt']} · {g['data_ids']} data ids · {g['jobs_done']}/{g['jobs_total']} jobs done"
        + (" · [yellow]stalled[/]" if g.get("stalled") else "")
    )
    attempts = _table(
        "attempts",
        ("attempt", "kind", "workflow", "version", "restarts", "by", "created", "jobs", "changes"),
        [
            (
                a["attempt"],
                a["kind"],
                a["workflow_id"],
                a["campaign_version"],
                a["restarts"],
                a["created_by"],
                when(a["created_at"]),
                " ".join(f"{k} {v}" for k, v in sorted(a["jobs"].items())),
                "; ".join(f"{d['path']}: {d['old']} → {d['new']}" for d in a["config_diff"][:4]),
            )
            for a in g.get("attempts", [])
        ],
        {"attempt", "workflow", "version", "restarts"},
    )
    return Group(header, attempts)


def _outcome_view(o: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    what = f"{o['verb']} (preview)" if o.get("preview") else o["verb"]
    parts: list[Any] = [Text(f"{o['object_type']} {o['object_id']}: {what}: {o['message']}")]
    dry = o.get("dry_run") or (o if "data_ids" in o and "steps" in o else None)
    if dry:
        parts.append(_dry_run_view(dry, "launch" if not o.get("preview") else "dry run"))
    for key in ("selected", "rerun"):
        if o.get(key):
            parts.append(Text(f"{key}: {', '.join(map(str, o[key]))}"))
    return Group(*parts)


# --- the command ---------------------------------------------------------------------------------


def _show(args: argparse.Namespace, value: Any, view: Callable[[Any], Any]) -> int:
    if args.json:
        print_json(value)
    else:
        console().print(view(value))
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    client = _client(args)
    what = args.campaign_command
    if what == "list":
        params: dict[str, Any] = {"limit": min(args.limit, 1000)}
        if args.status:
            params["status"] = args.status
        return _show(args, list(client.paginate("campaigns/", params, limit=args.limit)), _campaigns_view)
    if what == "log":
        items = list(
            client.paginate(
                f"campaigns/{args.id}/actions/", {"limit": min(args.limit, 1000)}, limit=args.limit
            )
        )
        return _show(args, items, lambda v: _log_view(v, args.id))
    if what == "create":
        body = {"spec": Path(args.spec).read_text(encoding="utf-8"), "comment": args.comment}
        created = client.post("campaigns/", body)
        return _show(
            args,
            created,
            lambda c: f"campaign {c['id']} {c['name']} created: {c['status']}, version {c['version']}",
        )
    if what == "edit":
        spec = Path(args.spec).read_text(encoding="utf-8")
        return _show(
            args,
            client.post(f"campaigns/{args.id}/spec/", {"spec": spec, "comment": args.comment}),
            _outcome_view,
        )
    if what == "show":
        return _show(args, client.get(f"campaigns/{args.id}/"), _campaign_view)
    if what == "dry-run":
        return _show(args, client.get(f"campaigns/{args.id}/dry-run/"), _dry_run_view)
    if what in CAMPAIGN_VERBS:
        return _show(
            args, client.post(f"campaigns/{args.id}/{what}/", {"preview": args.preview}), _outcome_view
        )
    if what == "step":
        answer = client.post(f"campaign-steps/{args.id}/{args.verb}/", {"preview": args.preview})
        return _show(args, answer, _outcome_view)
    if args.verb == "show":
        return _show(args, client.get(f"campaign-groups/{args.id}/"), _group_view)
    return _show(
        args, client.post(f"campaign-groups/{args.id}/{args.verb}/", _group_body(args)), _outcome_view
    )


def _group_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"preview": args.preview}
    if args.verb == "rescue":
        selection = {
            k: v
            for k, v in {
                "error": args.error,
                "label": args.label,
                "site": args.site,
                "data_min": _scalar(args.data_min),
                "data_max": _scalar(args.data_max),
            }.items()
            if v not in (None, "")
        }
        overrides: dict[str, Any] = {"memory_mb": args.memory_mb} if args.memory_mb else {}
        sites = {k: v for k, v in (("include", args.only_site), ("exclude", args.avoid_site)) if v}
        if sites:
            overrides["sites"] = sites
        body.update(selection=selection, overrides=overrides)
    return body


def _scalar(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _options() -> argparse.ArgumentParser:
    """--url, --token-file and --json after any subcommand too; SUPPRESS keeps a value given before
    the subcommand (`ailuro campaign --json show 3`) from being reset by the subcommand's default."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=argparse.SUPPRESS, help="server URL")
    options.add_argument("--token-file", default=argparse.SUPPRESS, help="file holding the API token")
    options.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the server's JSON (for scripts)"
    )
    return options


def add_campaign_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    camp = sub.add_parser("campaign", help="campaigns: create, launch, watch and recover", parents=[common])
    csub = camp.add_subparsers(dest="campaign_command", required=True)
    options = _options()

    def add(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = csub.add_parser(name, help=text, parents=[options])
        return parser

    p = add("list", "campaigns with their group counts, newest first")
    p.add_argument("--status", type=_choice("status", CAMPAIGN_STATES), help=", ".join(CAMPAIGN_STATES))
    p.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    p = add("create", "create a draft campaign from a YAML spec")
    p.add_argument("spec")
    p.add_argument("--comment", default="")
    p = add("edit", "a new version of a draft or paused campaign's spec")
    p.add_argument("id", type=int)
    p.add_argument("spec")
    p.add_argument("--comment", default="")
    add("show", "steps, groups, progress").add_argument("id", type=int)
    add("dry-run", "what a launch would do").add_argument("id", type=int)
    p = add("log", "audit log, newest first")
    p.add_argument("id", type=int)
    p.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    for verb in CAMPAIGN_VERBS:
        p = add(verb, f"{verb} a campaign")
        p.add_argument("id", type=int)
        p.add_argument("--preview", action="store_true")
    p = add("step", "step verbs: pause, resume, release (a breakpoint)")
    p.add_argument("verb", type=_choice("step verb", STEP_VERBS), help=", ".join(STEP_VERBS))
    p.add_argument("id", type=int)
    p.add_argument("--preview", action="store_true")
    p = add("group", "group verbs: show and the recovery verbs")
    p.add_argument(
        "verb", type=_choice("group verb", ("show", *GROUP_VERBS)), help=", ".join(("show", *GROUP_VERBS))
    )
    p.add_argument("id", type=int)
    p.add_argument("--preview", action="store_true")
    p.add_argument("--error", help="rescue: error class, e.g. exe:137")
    p.add_argument("--label", help="rescue: only this label's failed jobs")
    p.add_argument("--site", help="rescue: only failures at this queue or site")
    p.add_argument("--data-min", help="rescue: data-id range start (inclusive)")
    p.add_argument("--data-max", help="rescue: data-id range end (inclusive)")
    p.add_argument("--memory-mb", type=_positive, help="rescue: memory for the selected jobs")
    p.add_argument(
        "--avoid-site",
        action="append",
        help="rescue: keep the rerun off this queue or site (repeatable, * ok)",
    )
    p.add_argument("--only-site", action="append", help="rescue: run the rerun only here (repeatable, * ok)")
    camp.set_defaults(func=cmd_campaign)
