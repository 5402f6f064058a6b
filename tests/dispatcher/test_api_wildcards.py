"""The REST lists' wildcard filters: a prefix (`x*`) is an index range on a code-point collation,
a queue prefix goes through the queue's name, and every form selects what the grammar says."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import Q

from dispatcher.models import Job
from dispatcher.queries import prefix_q
from tests.dispatcher.test_api_workflows import client_for
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db


def _ids(query: str) -> set[int]:
    reply = client_for("ops", "operator").get(f"/api/v1/jobs/?{query}&limit=1000")
    assert reply.status_code == 200, reply.content
    return {row["pandaid"] for row in reply.json()["results"]}


def test_prefix_suffix_and_negated_wildcards_select_what_they_say() -> None:
    for name in ("Q_001", "Q_002", "Q_010", "QX_1"):
        QueueFactory(name=name)
    jobs = {
        (queue, user): JobFactory(queue_id=queue, produsername=user, jobstatus="activated").pandaid
        for queue in ("Q_001", "Q_002", "Q_010", "QX_1")
        for user in ("nobody", "nobody_else", "alice", "nobodz")
    }

    def expect(test: object) -> set[int]:
        return {pandaid for key, pandaid in jobs.items() if test(*key)}  # type: ignore[operator]

    assert _ids("computingsite=Q_00*") == expect(lambda q, u: q.startswith("Q_00"))
    assert _ids("computingsite=!Q_00*") == expect(lambda q, u: not q.startswith("Q_00"))
    assert _ids("computingsite=*_1") == expect(lambda q, u: q.endswith("_1"))
    assert _ids("produsername=nobody*") == expect(lambda q, u: u.startswith("nobody"))
    assert _ids("produsername=nobody*|alice") == expect(lambda q, u: u.startswith("nobody") or u == "alice")
    assert _ids("produsername=no*dy") == expect(lambda q, u: u == "nobody")


def test_a_prefix_is_an_index_range_under_a_code_point_collation(postgres_only: None) -> None:
    sql = str(Job.objects.filter(prefix_q("produsername", "nobody")).query)
    with connection.cursor() as cursor:
        cursor.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
        collation = cursor.fetchone()[0]
    if collation in ("C", "POSIX", "C.UTF-8", "C.utf8"):
        assert "LIKE" not in sql and ">=" in sql and "<" in sql
    else:
        assert "LIKE" in sql
    assert Job.objects.filter(prefix_q("produsername", "nobody")).query.where is not None
    assert prefix_q("produsername", "") == Q(produsername__startswith="")
