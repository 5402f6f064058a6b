from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group

from core.roles import Role, role_allows, user_roles
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class _Token:
    def __init__(self, role: str) -> None:
        self.role = role


def test_roles_from_groups_tokens_and_superuser() -> None:
    plain = UserFactory()
    reader = UserFactory()
    reader.groups.add(Group.objects.create(name="ailuro-reader"))
    boss = UserFactory(is_superuser=True)

    assert user_roles(AnonymousUser()) == frozenset()
    assert user_roles(plain) == {Role.READER, Role.USER}
    assert user_roles(reader) == {Role.READER}
    assert role_allows(user_roles(boss), Role.OPERATOR)
    assert user_roles(boss, _Token(Role.PILOT)) == {Role.PILOT}
    assert not role_allows(user_roles(plain, _Token(Role.PILOT)), Role.READER)
