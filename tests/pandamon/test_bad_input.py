"""Bad input on every page: unknown filters reported, malformed values a 400 naming them,
injection attempts inert, and markup from the database (job names, error messages, logs) escaped."""

from __future__ import annotations

import pytest

from dispatcher.models import Job, JobAttempt, PayloadLog, Task, Workflow
from tests.pandamon.conftest import XSS, World

pytestmark = pytest.mark.django_db


def page_urls(world: World) -> list[str]:
    return [
        "/",
        "/dash/",
        "/jobs/",
        "/tasks/",
        "/workflows/",
        "/errors/",
        "/sites/",
        "/users/",
        "/user/alice/",
        "/site/SLAC/",
        f"/job/{world.jobs['isr_4'].pandaid}/",
        f"/job/{world.jobs['isr_5'].pandaid}/",
        f"/job/{world.jobs['isr_5'].pandaid}/log/?after=0",
        f"/task/{world.tasks['isr'].pk}/",
        f"/workflow/{world.workflow.pk}/",
        f"/workflow/{world.workflow.pk}/?label=isr",
    ]


@pytest.fixture
def hostile_world(world: World) -> World:
    """The same world with markup in every free-text field the monitor shows."""
    Workflow.objects.filter(pk=world.workflow.pk).update(name=XSS)
    Task.objects.filter(workflow=world.workflow).update(name=XSS)
    Job.objects.filter(pk=world.jobs["isr_4"].pk).update(name=XSS, piloterrordiag=XSS)
    Job.objects.filter(pk=world.jobs["isr_5"].pk).update(name=XSS + "5", node=XSS)
    JobAttempt.objects.filter(job=world.jobs["isr_4"]).update(piloterrordiag=XSS + " 7200")
    PayloadLog.objects.filter(job=world.jobs["isr_5"]).update(text=XSS)
    return world


def test_markup_from_the_database_is_escaped_on_every_page(client, hostile_world: World) -> None:
    shown = 0
    for url in page_urls(hostile_world):
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert "<script>alert" not in body, url
        assert "<img src=x" not in body, url
        if "&lt;script&gt;alert" in body or "\\u003Cscript\\u003Ealert" in body:
            shown += 1
    # The payload really reached the pages (escaped), not just vanished.
    assert shown >= 10


def test_json_output_carries_markup_as_data_not_html(client, hostile_world: World) -> None:
    response = client.get(f"/job/{hostile_world.jobs['isr_4'].pandaid}/?json")
    assert response["Content-Type"] == "application/json"
    assert response.json()["job"]["name"] == XSS


def test_unknown_filters_are_reported_on_every_filterable_page(client, world: World) -> None:
    for url in ["/jobs/", "/tasks/", "/workflows/", "/errors/", "/dash/", "/sites/", "/users/"]:
        page = client.get(url + "?frobnicate=1").content.decode()
        assert 'id="unknown-filters"' in page, url
        assert "<code>frobnicate</code>" in page, url
        data = client.get(url + "?frobnicate=1&json").json()
        assert data["unknown_filters"] == ["frobnicate"], url
    page = client.get(f"/workflow/{world.workflow.pk}/?frobnicate=1").content.decode()
    assert "<code>frobnicate</code>" in page


def test_an_unknown_filter_name_with_markup_is_escaped_when_reported(client, world: World) -> None:
    page = client.get("/jobs/", {XSS: "1"}).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/jobs/?attemptnr=abc", "attemptnr"),
        ("/jobs/?hours=-1", "hours"),
        ("/jobs/?date_from=tomorrow", "date_from"),
        ("/jobs/?jobstatus=exploded", "jobstatus"),
        ("/jobs/?display_limit=100000", "display_limit"),
        ("/errors/?jeditaskid=1;DROP", "jeditaskid"),
        ("/tasks/?cursor=x", "cursor"),
        ("/workflows/?id=a", "id"),
        ("/dash/?days=0", "days"),
        ("/job/{job}/log/?after=-1", "after"),
    ],
)
def test_malformed_values_are_a_400_naming_the_parameter(client, world: World, url: str, named: str) -> None:
    url = url.format(job=world.jobs["isr_5"].pandaid)
    response = client.get(url + "&json" if "?" in url else url + "?json")
    assert response.status_code == 400
    assert named in response.json()["error"]
    html = client.get(url)
    assert html.status_code == 400
    assert named.encode() in html.content


def test_injection_attempts_in_filters_are_inert(client, world: World) -> None:
    jobs_before = Job.objects.count()
    for payload in ["' OR '1'='1", "x'; DROP TABLE dispatcher_job; --", "*' UNION SELECT 1 --*", "\\'"]:
        for field in ("jobname", "computingsite", "produsername", "piloterrordiag"):
            data = client.get("/jobs/", {field: payload, "json": ""}).json()
            assert data["total"] == 0, (field, payload)
        assert client.get("/errors/", {"computingsite": payload, "json": ""}).json()["failed_attempts"] == 0
        assert client.get("/tasks/", {"taskname": payload, "json": ""}).json()["tasks"] == []
    assert Job.objects.count() == jobs_before
