"""`ailuro campaign …`: the campaign verbs of the REST API from the command line. No Django here.

Server and credentials as for every client command (`ailuro.config`: --url/--token-file, then
$AILURO_URL/$AILURO_TOKEN/$AILURO_TOKEN_FILE, then the config file; `ailuro login` tokens work).
Every verb prints the server's JSON answer; `--preview` asks what would happen without acting.
Exit status: 0 done, 1 refused or rejected by the server (the message is printed), 2 usage or
configuration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ailuro.config import config_load
from ailuro.http import Client

CAMPAIGN_VERBS = ("launch", "pause", "resume")
STEP_VERBS = ("pause", "resume", "release")
GROUP_VERBS = ("restart", "rescue", "retry", "accept", "reject", "pause", "resume")


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> int:
    """One REST call with the CLI's configuration (flags < environment < config file, token files
    of `ailuro login` included); errors surface as ApiError/ConfigError, reported by `cli.main`."""
    client = Client(config_load(url=args.url, token_file=args.token_file))
    payload = client.request(method, path, json=body, params=params)
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    what = args.campaign_command
    if what == "list":
        return _call(args, "GET", "campaigns/", params={"status": args.status} if args.status else None)
    if what == "create":
        return _call(
            args,
            "POST",
            "campaigns/",
            {"spec": Path(args.spec).read_text(encoding="utf-8"), "comment": args.comment},
        )
    if what == "edit":
        spec = Path(args.spec).read_text(encoding="utf-8")
        return _call(args, "POST", f"campaigns/{args.id}/spec/", {"spec": spec, "comment": args.comment})
    if what == "show":
        return _call(args, "GET", f"campaigns/{args.id}/")
    if what == "dry-run":
        return _call(args, "GET", f"campaigns/{args.id}/dry-run/")
    if what == "log":
        return _call(args, "GET", f"campaigns/{args.id}/actions/")
    if what in CAMPAIGN_VERBS:
        return _call(args, "POST", f"campaigns/{args.id}/{what}/", {"preview": args.preview})
    if what == "step":
        return _call(args, "POST", f"campaign-steps/{args.id}/{args.verb}/", {"preview": args.preview})
    if args.verb == "show":
        return _call(args, "GET", f"campaign-groups/{args.id}/")
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
    return _call(args, "POST", f"campaign-groups/{args.id}/{args.verb}/", body)


def _scalar(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def add_campaign_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    camp = sub.add_parser("campaign", help="campaigns: create, launch, watch and recover", parents=[common])
    csub = camp.add_subparsers(dest="campaign_command", required=True)
    p = csub.add_parser("list", help="campaigns with their group counts")
    p.add_argument("--status", default="")
    p = csub.add_parser("create", help="create a draft campaign from a YAML spec")
    p.add_argument("spec")
    p.add_argument("--comment", default="")
    p = csub.add_parser("edit", help="a new version of a draft or paused campaign's spec")
    p.add_argument("id", type=int)
    p.add_argument("spec")
    p.add_argument("--comment", default="")
    for name, text in (
        ("show", "steps, groups, progress"),
        ("dry-run", "what a launch would do"),
        ("log", "audit log"),
    ):
        csub.add_parser(name, help=text).add_argument("id", type=int)
    for verb in CAMPAIGN_VERBS:
        p = csub.add_parser(verb, help=f"{verb} a campaign")
        p.add_argument("id", type=int)
        p.add_argument("--preview", action="store_true")
    p = csub.add_parser("step", help="step verbs: pause, resume, release (a breakpoint)")
    p.add_argument("verb", choices=STEP_VERBS)
    p.add_argument("id", type=int)
    p.add_argument("--preview", action="store_true")
    p = csub.add_parser("group", help="group verbs: show and the recovery verbs")
    p.add_argument("verb", choices=("show", *GROUP_VERBS))
    p.add_argument("id", type=int)
    p.add_argument("--preview", action="store_true")
    p.add_argument("--error", help="rescue: error class, e.g. exe:137")
    p.add_argument("--label", help="rescue: only this label's failed jobs")
    p.add_argument("--site", help="rescue: only failures at this queue or site")
    p.add_argument("--data-min", help="rescue: data-id range start (inclusive)")
    p.add_argument("--data-max", help="rescue: data-id range end (inclusive)")
    p.add_argument("--memory-mb", type=int, help="rescue: memory for the selected jobs")
    p.add_argument(
        "--avoid-site",
        action="append",
        help="rescue: keep the rerun off this queue or site (repeatable, * ok)",
    )
    p.add_argument("--only-site", action="append", help="rescue: run the rerun only here (repeatable, * ok)")
    camp.set_defaults(func=cmd_campaign)
