"""Who may read and act on a campaign (docs/architecture.md#security): one access function, used by API and pages."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from campaigns.models import Campaign, Group, Step
from core.roles import Role, role_allows, user_roles


def campaign_get_for_user(user: Any, token: Any, campaign_id: int, *, write: bool = False) -> Campaign:
    """404 for an unknown campaign; 403 when the user may not read it (no role, anonymous read
    off) or, for `write`, is neither its owner (role user) nor an operator."""
    campaign = get_object_or_404(Campaign.objects.select_related("owner"), pk=campaign_id)
    if not write:
        require_reader(user, token)
        return campaign
    if may_act(user, token, campaign):
        return campaign
    raise PermissionDenied("acting on this campaign needs the operator role or ownership")


def may_act(user: Any, token: Any, campaign: Campaign) -> bool:
    """Operators, and the owner with the user role: who gets the campaign's action buttons."""
    roles = user_roles(user, token)
    if role_allows(roles, Role.OPERATOR):
        return True
    return role_allows(roles, Role.USER) and campaign.owner_id == getattr(user, "pk", None)


def require_reader(user: Any, token: Any) -> None:
    if role_allows(user_roles(user, token), Role.READER):
        return
    if not getattr(user, "is_authenticated", False) and settings.AILURO["ANONYMOUS_READ"]:
        return
    raise PermissionDenied("reading campaigns needs the reader role")


def campaign_id_of(object_type: str, object_id: int) -> int:
    """The campaign a step or group belongs to (404 when it does not exist)."""
    if object_type == "step":
        return int(get_object_or_404(Step.objects.only("campaign_id"), pk=object_id).campaign_id)
    if object_type == "group":
        return int(get_object_or_404(Group.objects.only("campaign_id"), pk=object_id).campaign_id)
    return object_id


def may_create(user: Any, token: Any) -> bool:
    return role_allows(user_roles(user, token), Role.USER)
