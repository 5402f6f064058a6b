"""/jobs/ under a user wildcard lists each matching user's newest jobs merged from the
(produsername, pandaid) index, page by page exactly as the plain ordered read of the selection."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dispatcher.models import Job
from pandamon import rollups
from tests.factories import JobFactory, QueueFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres_only")]

USERS = ("ann", "anna", "andy", "bob")


@pytest.fixture
def jobs() -> None:
    """Users' jobs interleaved in pandaid order over three days, and some older than a week."""
    QueueFactory(name="Q_U")
    tasks = {user: TaskFactory(username=user) for user in USERS}
    now = timezone.now()
    for i in range(40):
        user = USERS[(i * 7) % len(USERS) if i % 5 else 0]
        JobFactory(
            task=tasks[user],
            produsername=user,
            jobstatus=("finished", "failed", "running")[i % 3],
            queue_id="Q_U",
            statechangetime=now - timedelta(hours=(i * 13) % 72, minutes=i),
        )
    for i in range(5):
        JobFactory(
            task=tasks["ann"],
            produsername="ann",
            jobstatus="finished",
            statechangetime=now - timedelta(days=9, hours=i),
        )
    while rollups.rollups_fold():
        pass


def _pages(client: Client, query: str, limit: int) -> tuple[list[int], list[str]]:
    seen: list[int] = []
    statements: list[str] = []
    url = f"/jobs/?{query}&json&display_limit={limit}"
    for _ in range(50):
        with CaptureQueriesContext(connection) as ctx:
            data: dict[str, Any] = client.get(url).json()
        statements += [q["sql"] for q in ctx.captured_queries]
        seen += [j["pandaid"] for j in data["jobs"]]
        if not data["next_cursor"]:
            break
        url = f"/jobs/?{query}&json&display_limit={limit}&cursor={data['next_cursor']}"
    return seen, statements


@pytest.mark.parametrize(("sortby", "descending"), [("pandaid", True), ("pandaid-asc", False)])
def test_a_user_wildcards_pages_are_each_users_newest_merged(
    client: Client, jobs: None, sortby: str, descending: bool
) -> None:
    since = timezone.now() - timedelta(days=7)
    expected = list(
        Job.objects.filter(produsername__startswith="an", statechangetime__gte=since)
        .order_by("-pandaid" if descending else "pandaid")
        .values_list("pandaid", flat=True)
    )
    assert len(expected) > 20
    seen, statements = _pages(client, f"days=7&produsername=an*&sortby={sortby}", 4)
    assert seen == expected
    # The list read is one UNION ALL of the three matching users' index ranges, not a walk of them.
    assert any(sql.count('"dispatcher_job"."produsername" = ') == 3 for sql in statements)


def test_a_user_negation_lists_the_other_users_merged_as_well(client: Client, jobs: None) -> None:
    since = timezone.now() - timedelta(days=7)
    expected = list(
        Job.objects.filter(statechangetime__gte=since)
        .exclude(produsername="bob")
        .order_by("-pandaid")
        .values_list("pandaid", flat=True)
    )
    seen, _ = _pages(client, "days=7&produsername=!bob", 7)
    assert seen == expected
