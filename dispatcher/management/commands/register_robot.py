from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.roles import Role
from core.services import robot_register
from dispatcher.models import Queue


class Command(BaseCommand):
    help = (
        "Register an OIDC client-credentials client as a robot: a pilot fleet bound to queues, or a "
        "campaign robot with another role. Its bearer tokens then act with that role."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Short name; the robot's user is robot-<name>.")
        parser.add_argument("--client-id", required=True, help="The client id at the identity provider.")
        parser.add_argument("--subject", default="", help="`sub` of its tokens, when not the client id.")
        parser.add_argument("--role", default=Role.PILOT, choices=Role.values)
        parser.add_argument("--queue", action="append", default=[], help="Bind a pilot robot to a queue.")

    def handle(
        self, *args: Any, name: str, client_id: str, subject: str, role: str, queue: list[str], **options: Any
    ) -> None:
        missing = sorted(
            set(queue) - set(Queue.objects.filter(name__in=queue).values_list("name", flat=True))
        )
        if missing:
            raise CommandError(f"unknown queue(s): {', '.join(missing)}")
        try:
            robot = robot_register(name=name, client_id=client_id, subject=subject, role=role, queues=queue)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"registered {robot}")
