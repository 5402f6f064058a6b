"""REST API of the campaign manager (`/api/v1/…`): thin views over campaigns.services and
campaigns.queries. Every verb takes `{"preview": true}` to check and report without acting.

Errors: 400 bad spec or body (names the field), 403, 404, 409 when a verb's precondition fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import services
from campaigns.access import campaign_get_for_user, campaign_id_of, may_create, require_reader
from campaigns.dry_run import campaign_dry_run
from campaigns.models import ActionLog, Campaign, CampaignStatus, CampaignVersion, Group, GroupAttempt
from campaigns.queries import (
    campaign_actions_queryset,
    campaign_steps_with_groups,
    campaigns_for_list,
    group_attempt_chain,
    group_counts,
    groups_jobs_done_live,
    progress_summary,
)
from campaigns.serializers import (
    ActionPageSerializer,
    CampaignDetailSerializer,
    CampaignPageSerializer,
    CampaignSerializer,
    DryRunSerializer,
    GroupDetailSerializer,
    OutcomeSerializer,
    PreviewBodySerializer,
    RescueBodySerializer,
    SpecBodySerializer,
)
from campaigns.spec import SpecInvalid, config_diff
from campaigns.splitting import SplitError
from dispatcher.api.base import ApiError, KeysetPagination
from dispatcher.queries import workflow_state_counts

# Keyset pages as /api/v1/workflows/ and /jobs/: `limit` (1–1000, default 100), `cursor`, next/previous.
_PAGE_PARAMETERS = [
    OpenApiParameter("cursor", str, description="The page cursor, from a previous page's `next`."),
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 1000},
        description="Rows per page (default 100).",
    ),
]
_STATUS_PARAMETER = OpenApiParameter(
    "status", str, enum=list(CampaignStatus.values), description="Only campaigns in this state."
)
_LIST_PARAMS = frozenset({"cursor", "limit", "status"})


def _actor(request: Request) -> str:
    return str(request.user.get_username()) if request.user.is_authenticated else "anonymous"


def _error(message: str, code: int) -> Response:
    return Response({"detail": message}, status=code)


def campaign_as_dict(c: Campaign, *, groups: dict[str, int] | None = None) -> dict[str, Any]:
    """A campaign as JSON; group counts from `campaigns_for_list`'s annotations unless given."""
    return {
        "id": c.pk,
        "name": c.name,
        "owner": c.owner.get_username(),
        "status": c.status,
        "version": c.version,
        "created_at": c.created_at,
        "launched_at": c.launched_at,
        "ended_at": c.ended_at,
        "groups": groups
        or {
            "total": getattr(c, "groups_total", None),
            "accepted": getattr(c, "groups_accepted", None),
            "running": getattr(c, "groups_running", None),
            "failed": getattr(c, "groups_failed", None),
        },
    }


def group_as_dict(g: Group) -> dict[str, Any]:
    return {
        "id": g.pk,
        "name": g.name,
        "status": g.status,
        "attempt": g.attempt,
        "data_ids": len(g.data_ids),
        "upstream": g.upstream,
        "jobs_total": g.jobs_total,
        "jobs_done": g.jobs_done,
        "percent": int(100 * g.jobs_done / g.jobs_total) if g.jobs_total else 0,
        "eta": g.eta,
        "eta_basis": g.eta_basis,
        "stalled": g.stalled,
        "stall_basis": g.stall_basis,
        "activity_at": g.activity_at,
    }


def _paged(request: Request, rows: QuerySet[Any], as_dict: Callable[[Any], dict[str, Any]]) -> Response:
    """One keyset page of `rows` (newest first), as the dispatcher's lists page."""
    paginator = KeysetPagination()
    try:
        page = paginator.paginate_queryset(rows, request)
    except ApiError as exc:
        return Response({"detail": exc.detail, "field": exc.field}, status=exc.status_code)
    return paginator.get_paginated_response([as_dict(row) for row in page or []])


def _comment(data: Any) -> str:
    comment = data.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 300:
        raise SpecInvalid("comment must be a string of at most 300 characters", field="comment")
    return comment


@extend_schema(
    methods=["GET"],
    operation_id="campaigns_list",
    summary="Campaigns with group counts, newest first, in keyset pages",
    parameters=[*_PAGE_PARAMETERS, _STATUS_PARAMETER],
    responses=CampaignPageSerializer,
)
@extend_schema(
    methods=["POST"],
    operation_id="campaigns_create",
    summary="Create a draft campaign from {spec, comment}",
    request=SpecBodySerializer,
    responses={201: CampaignSerializer},
)
@api_view(["GET", "POST"])
def campaign_list_api(request: Request) -> Response:
    """GET: campaigns with group counts. POST {"spec": "<yaml>", "comment": ""}: a draft campaign."""
    if request.method == "GET":
        require_reader(request.user, request.auth)
        unknown = sorted(set(request.query_params) - _LIST_PARAMS)
        if unknown:
            return Response(
                {
                    "detail": f"unknown parameter {unknown[0]!r}; this list takes cursor, limit, status",
                    "field": unknown[0],
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        rows = campaigns_for_list()
        state = request.query_params.get("status")
        if state:
            if state not in CampaignStatus.values:
                return Response(
                    {
                        "detail": f"status must be one of {', '.join(CampaignStatus.values)}, got {state!r}",
                        "field": "status",
                    },
                    status=status.HTTP_400_BAD_REQUEST,
                )
            rows = rows.filter(status=state)
        return _paged(request, rows, campaign_as_dict)
    if not may_create(request.user, request.auth):
        raise PermissionDenied("creating campaigns needs the user role")
    data = request.data if isinstance(request.data, dict) else {}
    spec = data.get("spec")
    if not isinstance(spec, str):
        return Response(
            {"detail": "body needs `spec`: the campaign YAML as a string", "field": "spec"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if not isinstance(request.user, User):
        raise PermissionDenied("creating campaigns needs a user account")
    try:
        campaign = services.campaign_create(owner=request.user, spec_yaml=spec, comment=_comment(data))
    except SpecInvalid as exc:
        return Response(exc.as_dict(), status=exc.status_code)
    except SplitError as exc:
        return _error(str(exc), status.HTTP_400_BAD_REQUEST)
    return Response(campaign_as_dict(campaign), status=status.HTTP_201_CREATED)


@extend_schema(
    operation_id="campaigns_detail",
    summary="A campaign with steps, groups, progress and versions",
    responses=CampaignDetailSerializer,
)
@api_view(["GET"])
def campaign_detail_api(request: Request, campaign_id: int) -> Response:
    campaign = campaign_get_for_user(request.user, request.auth, campaign_id)
    steps = campaign_steps_with_groups(campaign.pk)
    groups_jobs_done_live(g for s in steps for g in s.groups.all())
    body = campaign_as_dict(campaign, groups=group_counts(g for s in steps for g in s.groups.all()))
    body["steps"] = [
        {
            "id": s.pk,
            "name": s.name,
            "status": s.status,
            "breakpoint": s.breakpoint,
            "progress": progress_summary(s.groups.all()),
            "groups": [group_as_dict(g) for g in s.groups.all()],
        }
        for s in steps
    ]
    body["progress"] = progress_summary(g for s in steps for g in s.groups.all())
    body["versions"] = list(
        CampaignVersion.objects.filter(campaign=campaign).values(
            "version", "created_by", "created_at", "comment"
        )
    )
    return Response(body)


def action_as_dict(a: ActionLog) -> dict[str, Any]:
    return {
        "id": a.pk,
        "time": a.created_at,
        "actor": a.actor,
        "verb": a.verb,
        "object_type": a.object_type,
        "object_id": a.object_id,
        "params": a.params,
        "result": a.result,
        "message": a.message,
    }


@extend_schema(
    operation_id="campaigns_actions",
    summary="The campaign's audit log, newest first, in keyset pages",
    parameters=_PAGE_PARAMETERS,
    responses=ActionPageSerializer,
)
@api_view(["GET"])
def campaign_actions_api(request: Request, campaign_id: int) -> Response:
    campaign = campaign_get_for_user(request.user, request.auth, campaign_id)
    return _paged(request, campaign_actions_queryset(campaign.pk), action_as_dict)


@extend_schema(
    operation_id="campaigns_dry_run",
    summary="What a launch would create",
    description="409 naming the field when the stored spec no longer passes the spec checks.",
    responses=DryRunSerializer,
)
@api_view(["GET"])
def campaign_dry_run_api(request: Request, campaign_id: int) -> Response:
    campaign = campaign_get_for_user(request.user, request.auth, campaign_id)
    try:
        spec = services.campaign_spec_checked(campaign)
    except SpecInvalid as exc:
        return Response(exc.as_dict(), status=exc.status_code)
    return Response(campaign_dry_run(spec, campaign_id=campaign.pk).as_dict())


@extend_schema(
    operation_id="campaigns_spec_edit",
    summary="A new version of the spec",
    request=SpecBodySerializer,
    responses=OutcomeSerializer,
)
@api_view(["POST"])
def campaign_spec_api(request: Request, campaign_id: int) -> Response:
    """POST {"spec": "<yaml>", "comment": ""}: a new version of the spec."""
    campaign_get_for_user(request.user, request.auth, campaign_id, write=True)
    data = request.data if isinstance(request.data, dict) else {}
    spec = data.get("spec")
    if not isinstance(spec, str):
        return _error("body needs `spec`: the campaign YAML as a string", status.HTTP_400_BAD_REQUEST)
    return _act(
        lambda: services.campaign_edit(
            campaign_id=campaign_id,
            actor=_actor(request),
            spec_yaml=spec,
            comment=_comment(data),
        )
    )


def _act(call: Callable[[], services.ActionOutcome]) -> Response:
    try:
        outcome = call()
    except services.ActionRefused as exc:
        return _error(str(exc), status.HTTP_409_CONFLICT)
    except SpecInvalid as exc:
        return Response(exc.as_dict(), status=exc.status_code)
    except (SplitError, ValueError) as exc:
        return _error(str(exc), status.HTTP_400_BAD_REQUEST)
    return Response(outcome.as_dict())


def _preview(request: Request) -> bool:
    value = request.data.get("preview", False) if isinstance(request.data, dict) else False
    if not isinstance(value, bool):
        raise ValueError("`preview` must be true or false")
    return value


_CAMPAIGN_VERBS = {
    "launch": services.campaign_launch,
    "pause": services.campaign_pause,
    "resume": services.campaign_resume,
}
_STEP_VERBS = {"pause": services.step_pause, "resume": services.step_resume, "release": services.step_release}
_GROUP_VERBS = {
    "pause": services.group_pause,
    "resume": services.group_resume,
    "restart": services.group_restart,
    "retry": services.group_retry,
    "accept": services.group_accept,
    "reject": services.group_reject,
}


@extend_schema(
    operation_id="campaigns_verb",
    summary="launch | pause | resume, with optional preview",
    parameters=[OpenApiParameter("verb", str, OpenApiParameter.PATH, enum=list(_CAMPAIGN_VERBS))],
    request=PreviewBodySerializer,
    responses=OutcomeSerializer,
)
@api_view(["POST"])
def campaign_action_api(request: Request, campaign_id: int, verb: str) -> Response:
    if verb not in _CAMPAIGN_VERBS:
        return _error(f"unknown campaign verb {verb!r}; one of {', '.join(_CAMPAIGN_VERBS)}", 404)
    campaign_get_for_user(request.user, request.auth, campaign_id, write=True)
    return _act(
        lambda: _CAMPAIGN_VERBS[verb](
            campaign_id=campaign_id, actor=_actor(request), preview=_preview(request)
        )
    )


@extend_schema(
    operation_id="campaign_steps_verb",
    summary="pause | resume | release, with optional preview",
    parameters=[OpenApiParameter("verb", str, OpenApiParameter.PATH, enum=list(_STEP_VERBS))],
    request=PreviewBodySerializer,
    responses=OutcomeSerializer,
)
@api_view(["POST"])
def step_action_api(request: Request, step_id: int, verb: str) -> Response:
    if verb not in _STEP_VERBS:
        return _error(f"unknown step verb {verb!r}; one of {', '.join(_STEP_VERBS)}", 404)
    campaign_get_for_user(request.user, request.auth, campaign_id_of("step", step_id), write=True)
    return _act(lambda: _STEP_VERBS[verb](step_id=step_id, actor=_actor(request), preview=_preview(request)))


@extend_schema(
    operation_id="campaign_groups_verb",
    summary="restart | rescue | retry | accept | reject | pause | resume",
    parameters=[OpenApiParameter("verb", str, OpenApiParameter.PATH, enum=[*_GROUP_VERBS, "rescue"])],
    request=RescueBodySerializer,
    responses=OutcomeSerializer,
)
@api_view(["POST"])
def group_action_api(request: Request, group_id: int, verb: str) -> Response:
    """Group verbs. `rescue` also takes `overrides` ({memory_mb, walltime_s, cores, disk_mb,
    priority, sites, labels}) and `selection` ({error, label, site, data_min, data_max})."""
    if verb != "rescue" and verb not in _GROUP_VERBS:
        return _error(f"unknown group verb {verb!r}; one of {', '.join([*_GROUP_VERBS, 'rescue'])}", 404)
    campaign_get_for_user(request.user, request.auth, campaign_id_of("group", group_id), write=True)
    if verb == "rescue":
        data = request.data if isinstance(request.data, dict) else {}
        # Checked key by key in the service (400 naming the field).
        overrides, selection = data.get("overrides"), data.get("selection")
        return _act(
            lambda: services.group_rescue(
                group_id=group_id,
                actor=_actor(request),
                overrides=overrides,
                selection=selection,
                preview=_preview(request),
            )
        )
    return _act(
        lambda: _GROUP_VERBS[verb](group_id=group_id, actor=_actor(request), preview=_preview(request))
    )


@extend_schema(
    operation_id="campaign_groups_detail",
    summary="A group with its attempt chain and config diffs",
    responses=GroupDetailSerializer,
)
@api_view(["GET"])
def group_detail_api(request: Request, group_id: int) -> Response:
    """A group with its attempt chain: workflow, kind, job counts and the config diff to the previous."""
    group = get_object_or_404(Group.objects.select_related("step"), pk=group_id)
    campaign_get_for_user(request.user, request.auth, group.campaign_id)
    groups_jobs_done_live([group])
    return Response({**group_as_dict(group), "step": group.step.name, "attempts": attempts_as_dicts(group)})


def attempts_as_dicts(group: Group) -> list[dict[str, Any]]:
    chain = group_attempt_chain(group.pk)
    out: list[dict[str, Any]] = []
    previous: GroupAttempt | None = None
    for a in chain:
        out.append(
            {
                "attempt": a.attempt,
                "kind": a.kind,
                "workflow_id": a.workflow_id,
                "campaign_version": a.campaign_version,
                "restarts": a.restarts,
                "created_by": a.created_by,
                "created_at": a.created_at,
                "overrides": a.overrides,
                "jobs": workflow_state_counts(a.workflow_id),
                "config_diff": config_diff(previous.config, a.config) if previous else [],
            }
        )
        previous = a
    return out
