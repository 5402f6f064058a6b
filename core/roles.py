"""The role model of DESIGN §7, shared by tokens, OIDC groups and the access functions."""

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
