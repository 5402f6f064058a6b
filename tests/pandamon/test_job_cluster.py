"""Clusters on the monitor: a cluster job's page lists its members (links, states), a member's
page links to its cluster."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.models import Job
from dispatcher.services import workflow_submit_spec
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SPEC: dict[str, Any] = {
    "name": "clustered",
    "dimensions": {"visit": [7]},
    "labels": {
        "isr": {"command": "isr {visit}", "over": ["visit"]},
        "calibrate": {"command": "calibrate {visit}", "over": ["visit"], "after": ["isr"]},
    },
    "cluster": {"by": ["visit"], "labels": ["isr", "calibrate"]},
}


def test_the_cluster_page_lists_its_members_and_a_member_links_to_its_cluster(client: Any) -> None:
    wf = workflow_submit_spec(owner=UserFactory(username="alice"), spec=SPEC)
    jobs = {j.name: j for j in Job.objects.filter(workflow=wf)}
    cluster, isr = jobs["isr+calibrate_cluster_7"], jobs["isr_7"]

    page = client.get(f"/job/{cluster.pandaid}/").content.decode()
    assert 'id="members"' in page
    for name in ("isr_7", "calibrate_7"):
        assert f'<a href="/job/{jobs[name].pandaid}/">{jobs[name].pandaid}</a></td><td>{name}</td>' in page
    data = client.get(f"/job/{cluster.pandaid}/?json").json()
    assert [(m["name"], m["jobstatus"]) for m in data["members"]] == [
        ("isr_7", "defined"),
        ("calibrate_7", "defined"),
    ]

    member = client.get(f"/job/{isr.pandaid}/").content.decode()
    assert 'id="cluster-of"' in member and f'<a href="/job/{cluster.pandaid}/">' in member
    assert 'id="members"' not in member
    assert client.get(f"/job/{isr.pandaid}/?json").json()["job"]["cluster_id"] == cluster.pandaid
