"""/jobs/ under a user wildcard, a region or a queue negation lists each matching user's or queue's
newest jobs merged from the (user, pandaid) or (queue, pandaid) index, page by page exactly as the
plain ordered read of the selection."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dispatcher.models import Job
from pandamon import rollups
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres_only")]

USERS = ("ann", "anna", "andy", "bob")
QUEUES = ("Q_US1", "Q_US2", "Q_EU1", "Q_EU2")


@pytest.fixture
def jobs() -> None:
    """Users' jobs interleaved in pandaid order over three days, and some older than a week."""
    us, eu = SiteFactory(name="SITE_US", region="US"), SiteFactory(name="SITE_EU", region="EU")
    for name in QUEUES:
        QueueFactory(name=name, site=us if "US" in name else eu)
    tasks = {
        user: TaskFactory(username=user, label="coadd" if user in ("ann", "bob") else "calib")
        for user in USERS
    }
    now = timezone.now()
    for i in range(40):
        user = USERS[(i * 7) % len(USERS) if i % 5 else 0]
        JobFactory(
            task=tasks[user],
            produsername=user,
            jobstatus=("finished", "failed", "running")[i % 3],
            queue_id=QUEUES[(i * 3) % len(QUEUES)],
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


def _merged_reads(statements: list[str]) -> set[int]:
    """How many index ranges each list read merged (one UNION ALL branch each)."""
    return {sql.count("UNION ALL") + 1 for sql in statements if '"max_rss_kb" AS "max_rss_kb"' in sql}


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
    assert _merged_reads(statements) == {3}


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


@pytest.mark.parametrize(
    ("query", "kept", "merged"),
    [
        ("region=US", lambda q: q.startswith("Q_US"), 2),
        ("computingsite=!Q_EU1", lambda q: q != "Q_EU1", 3),
        ("region=US&label=coadd", lambda q: q.startswith("Q_US"), 2),
    ],
)
def test_a_set_of_queues_pages_are_each_queues_newest_merged(
    client: Client, jobs: None, query: str, kept: Any, merged: int
) -> None:
    since = timezone.now() - timedelta(days=7)
    selected = Job.objects.filter(statechangetime__gte=since)
    if "label" in query:
        selected = selected.filter(label="coadd")
    expected = [p for p, q in selected.order_by("-pandaid").values_list("pandaid", "queue_id") if kept(q)]
    assert expected
    seen, statements = _pages(client, f"days=7&{query}", 3)
    assert seen == expected
    assert _merged_reads(statements) == {merged}


def test_each_merged_part_reads_its_value_by_the_fields_index_order_without_the_filter_it_stands_for(
    client: Client, jobs: None
) -> None:
    """A part is the value as a range ordered by (field, pandaid), an order only the field's index
    gives (the primary key's cannot: PostgreSQL once walked it past 1.9M newer jobs for one user),
    and without the region's join to the queues and sites, which its queue satisfies."""
    for query, field in (("produsername=an*", "produsername"), ("region=US", "computingsite")):
        _, statements = _pages(client, f"days=7&{query}", 3)
        parts = [
            part
            for sql in statements
            if '"max_rss_kb" AS "max_rss_kb"' in sql
            for part in sql.split("UNION ALL")
        ]
        assert len(parts) >= 2
        for part in parts:
            # (the field's column, then pandaid's, the first)
            assert re.search(r"ORDER BY ([2-9]|\d\d+) DESC, 1 DESC LIMIT", part), part
            assert f'"dispatcher_job"."{field}" >= ' in part and f'"dispatcher_job"."{field}" <= ' in part
            assert "dispatcher_site" not in part
