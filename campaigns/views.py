"""Campaign pages: /campaigns/, /campaign/<id>/ (steps × groups grid with progress, states and
actions) and /campaign/group/<id>/ (attempt chain and config diffs). Thin: reads from
campaigns.queries, writes through campaigns.services; `?json` on every page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from campaigns import services
from campaigns.access import campaign_get_for_user, campaign_id_of, may_act, require_reader
from campaigns.api import attempts_as_dicts, campaign_as_dict, group_as_dict
from campaigns.dry_run import dry_run_text
from campaigns.models import Group
from campaigns.queries import (
    campaign_actions,
    campaign_steps_with_groups,
    campaign_wasted,
    campaigns_for_list,
    group_counts,
    groups_jobs_done_live,
    progress_summary,
)

GROUP_VERBS = ("restart", "rescue", "retry", "accept", "reject", "pause", "resume")


def campaign_list_page(request: HttpRequest) -> HttpResponse:
    require_reader(request.user, None)
    rows = list(campaigns_for_list()[:500])
    if "json" in request.GET:
        return JsonResponse({"results": [campaign_as_dict(c) for c in rows]})
    return render(request, "campaigns/list.html", {"campaigns": rows})


def campaign_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = campaign_get_for_user(request.user, None, campaign_id)
    steps = campaign_steps_with_groups(campaign.pk)
    groups_jobs_done_live(g for s in steps for g in s.groups.all())
    grid: list[dict[str, Any]] = [
        {"step": s, "progress": progress_summary(s.groups.all()), "groups": list(s.groups.all())}
        for s in steps
    ]
    progress = progress_summary(g for s in steps for g in s.groups.all())
    wasted = campaign_wasted(campaign.pk)
    if "json" in request.GET:
        return JsonResponse(
            {
                **campaign_as_dict(campaign, groups=group_counts(g for r in grid for g in r["groups"])),
                "progress": progress,
                "wasted_core_seconds": wasted["core_seconds"],
                "wasted_core_hours": round(wasted["core_seconds"] / 3600, 3),
                "steps": [
                    {
                        "name": r["step"].name,
                        "status": r["step"].status,
                        "groups": [
                            {**group_as_dict(g), "wasted_core_seconds": wasted["by_group"].get(g.pk, 0)}
                            for g in r["groups"]
                        ],
                    }
                    for r in grid
                ],
            }
        )
    context: dict[str, Any] = {
        "campaign": campaign,
        "grid": grid,
        "progress": progress,
        "wasted": {
            "core_hours": f"{wasted['core_seconds'] / 3600:.2f}",
            "hours_by_group": [(gid, f"{c / 3600:.2f}") for gid, c in wasted["by_group"].items()],
        },
        "actions": campaign_actions(campaign.pk, limit=50),
        "group_verbs": GROUP_VERBS,
        "may_act": may_act(request.user, None, campaign),
    }
    return render(request, "campaigns/campaign.html", context)


def group_page(request: HttpRequest, group_id: int) -> HttpResponse:
    group = get_object_or_404(Group.objects.select_related("step", "campaign"), pk=group_id)
    campaign_get_for_user(request.user, None, group.campaign_id)
    groups_jobs_done_live([group])
    attempts = attempts_as_dicts(group)
    if "json" in request.GET:
        return JsonResponse({**group_as_dict(group), "attempts": attempts})
    return render(
        request, "campaigns/group.html", {"group": group, "attempts": attempts, "group_verbs": GROUP_VERBS}
    )


@require_POST
def campaign_action_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The page buttons: POST object (campaign | step | group), id, verb, preview; rescue also takes
    `error` (template prefix) and `memory_mb`. The outcome or refusal is shown as a message."""
    object_type = request.POST.get("object", "")
    try:
        object_id = int(request.POST.get("id", ""))
    except ValueError:
        messages.error(request, "id must be an integer")
        return redirect(f"/campaign/{campaign_id}/")
    if (
        object_type not in ("campaign", "step", "group")
        or campaign_id_of(object_type, object_id) != campaign_id
    ):
        raise PermissionDenied("that object is not part of this campaign")
    campaign_get_for_user(request.user, None, campaign_id, write=True)
    verb = request.POST.get("verb", "")
    preview = request.POST.get("preview") == "1"
    actor = request.user.get_username()
    calls = {
        ("campaign", "launch"): services.campaign_launch,
        ("campaign", "pause"): services.campaign_pause,
        ("campaign", "resume"): services.campaign_resume,
    }
    try:
        if (object_type, verb) in calls:
            outcome = calls[(object_type, verb)](campaign_id=object_id, actor=actor, preview=preview)
        elif object_type == "step" and verb in ("pause", "resume", "release"):
            fn = {
                "pause": services.step_pause,
                "resume": services.step_resume,
                "release": services.step_release,
            }[verb]
            outcome = fn(step_id=object_id, actor=actor, preview=preview)
        elif object_type == "group" and verb == "rescue":
            selection = {"error": request.POST["error"]} if request.POST.get("error") else {}
            memory = request.POST.get("memory_mb", "")
            overrides = {"memory_mb": int(memory)} if memory else {}
            outcome = services.group_rescue(
                group_id=object_id, actor=actor, selection=selection, overrides=overrides, preview=preview
            )
        elif object_type == "group" and verb in GROUP_VERBS:
            fn = getattr(services, f"group_{verb}")
            outcome = fn(group_id=object_id, actor=actor, preview=preview)
        else:
            messages.error(request, f"unknown action {object_type} {verb}")
            return redirect(f"/campaign/{campaign_id}/")
    except services.ActionRefused as exc:
        messages.error(request, f"{verb} refused: {exc}")
    except ValueError as exc:
        messages.error(request, f"{verb}: {exc}")
    else:
        extra = ""
        if outcome.details.get("rerun"):
            extra = f" — reruns {', '.join(outcome.details['rerun'][:20])}"
        elif verb == "launch":
            extra = " — " + dry_run_text(outcome.details.get("dry_run") or outcome.details)
        messages.success(request, f"{verb}{' (preview)' if preview else ''}: {outcome.message}{extra}")
    return redirect(f"/campaign/{campaign_id}/")
