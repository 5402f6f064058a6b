from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from core.models import OidcRobot
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db


def test_a_pilot_robot_is_registered_bound_to_existing_queues(capsys: pytest.CaptureFixture[str]) -> None:
    QueueFactory(name="SLAC_Rubin_Medium")

    call_command(
        "register_robot", "--name", "slac", "--client-id", "wms-robot", "--queue", "SLAC_Rubin_Medium"
    )

    robot = OidcRobot.objects.get()
    assert (robot.subject, robot.role, robot.queues) == ("wms-robot", "pilot", ["SLAC_Rubin_Medium"])
    assert robot.user.username == "robot-slac"
    assert not robot.user.has_usable_password()
    assert "registered robot slac" in capsys.readouterr().out


def test_registering_again_updates_the_robot_in_place() -> None:
    call_command(
        "register_robot",
        "--name",
        "c",
        "--client-id",
        "kc-client",
        "--subject",
        "uuid-1",
        "--role",
        "operator",
    )
    call_command(
        "register_robot", "--name", "c", "--client-id", "kc-client", "--subject", "uuid-2", "--role", "reader"
    )

    assert list(OidcRobot.objects.values_list("subject", "role")) == [("uuid-2", "reader")]


def test_bad_registrations_are_refused_with_the_reason() -> None:
    QueueFactory(name="Q1")
    with pytest.raises(CommandError, match="unknown queue"):
        call_command("register_robot", "--name", "x", "--client-id", "c", "--queue", "NOPE")
    with pytest.raises(CommandError, match="use them with role pilot"):
        call_command(
            "register_robot", "--name", "x", "--client-id", "c", "--role", "operator", "--queue", "Q1"
        )
    assert not OidcRobot.objects.exists()
