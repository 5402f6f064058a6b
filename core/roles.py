"""The role model (docs/architecture.md#security), shared by tokens, OIDC groups and the access functions."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    READER = "reader", "reader"
    USER = "user", "user"
    OPERATOR = "operator", "operator"
    PILOT = "pilot", "pilot"
    ADMIN = "admin", "admin"


# Django groups that grant a role carry this prefix ("ailuro-operator"), so a site can map its IdP
# groups onto them without clashing with groups it already has.
ROLE_GROUP_PREFIX = "ailuro-"


# What each role may do, so checks read as `role_allows(roles, Role.OPERATOR)`: higher roles
# include the lower ones except `pilot`, which is protocol-only and grants nothing else.
_IMPLIES: dict[str, frozenset[str]] = {
    Role.READER: frozenset({Role.READER}),
    Role.USER: frozenset({Role.READER, Role.USER}),
    Role.OPERATOR: frozenset({Role.READER, Role.USER, Role.OPERATOR}),
    Role.PILOT: frozenset({Role.PILOT}),
    Role.ADMIN: frozenset({Role.READER, Role.USER, Role.OPERATOR, Role.ADMIN}),
}


def user_roles(user: object, token: object = None) -> frozenset[str]:
    """The effective roles of a request's user.

    1. A token (ApiToken or a validated OIDC robot identity with a `role`) grants exactly its role.
    2. Superusers are admins.
    3. Otherwise the Django groups named `ailuro-<role>`; an authenticated user in none of them is a
       plain `user` (may submit and act on their own work).
    4. Anonymous users have no role (anonymous read is decided by the views, from the setting).
    """
    token_role = getattr(token, "role", None)
    if token_role:
        return _IMPLIES[str(token_role)]
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    if getattr(user, "is_superuser", False):
        return _IMPLIES[Role.ADMIN]
    names = [g[len(ROLE_GROUP_PREFIX) :] for g in user.groups.values_list("name", flat=True)]  # type: ignore[attr-defined]
    granted: set[str] = set()
    for name in names:
        if name in _IMPLIES:
            granted |= _IMPLIES[name]
    return frozenset(granted) if granted else _IMPLIES[Role.USER]


def role_allows(roles: frozenset[str], needed: str) -> bool:
    return needed in roles


def queue_allowed(token: object, queue: str) -> bool:
    """Whether a pilot credential — an `ail_` ApiToken or an OIDC robot identity — may fetch and
    update jobs of `queue`: pilot role only; a credential bound to queues only for those."""
    if getattr(token, "role", None) != Role.PILOT:
        return False
    queues = getattr(token, "queues", None) or ()
    return not queues or queue in queues
