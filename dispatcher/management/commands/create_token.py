from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.roles import Role
from core.services import token_create
from dispatcher.models import Queue


class Command(BaseCommand):
    help = "Print a new bearer token for an API client or a pilot fleet (stored hashed; revoke it in admin)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="User the token acts as (created if missing).")
        parser.add_argument("--role", default=Role.USER, choices=Role.values)
        parser.add_argument(
            "--queue", action="append", default=[], help="Bind a pilot token to this queue (repeatable)."
        )
        parser.add_argument("--name", default="", help="A note to recognise the token by in admin.")

    def handle(self, *args: Any, user: str, role: str, queue: list[str], name: str, **options: Any) -> None:
        missing = sorted(
            set(queue) - set(Queue.objects.filter(name__in=queue).values_list("name", flat=True))
        )
        if missing:
            raise CommandError(f"unknown queue(s): {', '.join(missing)}")
        if queue and role != Role.PILOT:
            raise CommandError("--queue binds pilot tokens; use it with --role pilot")
        self.stdout.write(token_create(username=user, role=role, queues=queue, name=name))
