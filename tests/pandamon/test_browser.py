"""The monitor in a real browser: Debian's chromium driven by Playwright against a live server.

Each page family renders (a screenshot of each is kept under var/artifacts/screenshots/pandamon/), a facet
click filters the list in place and pushes the URL, pagination moves on, the DAG draws with the
state colours, and the live payload-log tail grows while the job runs.
"""

from __future__ import annotations

import os

import pytest

from dispatcher.models import Job
from tests.factories import PayloadLogFactory
from tests.pandamon.conftest import World, shot

# Playwright's sync API runs an event loop in this thread; the ORM calls the test makes between
# browser steps are ordinary synchronous ones.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

FAILED_RED = "rgb(198, 40, 40)"  # #c62828, the failed colour of ailuro.css and charts.py

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]


def test_every_page_family_renders_in_chromium(page, live_world: World) -> None:
    w = live_world
    pages = {
        "overview": "/",
        "dash": "/dash/",
        "jobs": "/jobs/",
        "job": f"/job/{w.jobs['isr_4'].pandaid}/",
        "tasks": "/tasks/",
        "task": f"/task/{w.tasks['isr'].pk}/",
        "workflows": "/workflows/",
        "workflow": f"/workflow/{w.workflow.pk}/",
        "errors": "/errors/",
        "sites": "/sites/",
        "site": "/site/CERN/",
        "users": "/users/",
        "user": "/user/alice/",
    }
    for name, url in pages.items():
        response = page.goto(url)
        assert response.status == 200, url
        assert page.locator("h1").first.is_visible(), url
        for chart in page.locator("script[data-figure]").all():
            page.wait_for_selector(f"#{chart.get_attribute('data-figure')}.drawn", timeout=15_000)
        shot(page, "pandamon", name)
    page.goto("/jobs/")
    assert page.locator("#job-total").inner_text() == "8"


def test_a_facet_click_filters_in_place_and_pushes_the_url(page, live_world: World) -> None:
    page.goto("/jobs/")
    page.locator('[data-facet="computingsite"] a.facet-value', has_text="SLAC_Q").click()
    page.wait_for_url("**/jobs/?computingsite=SLAC_Q")
    page.wait_for_function("document.querySelector('#job-total').textContent.trim() === '1'")
    rows = page.locator("#job-table tbody tr")
    assert rows.count() == 1
    assert str(live_world.jobs["isr_4"].pandaid) in rows.first.inner_text()
    shot(page, "pandamon", "jobs-facet-clicked")


def test_pagination_moves_to_the_next_keyset_page(page, live_world: World) -> None:
    page.goto("/jobs/?display_limit=3")
    first = page.locator("#job-table tbody tr td:first-child").all_inner_texts()
    page.locator("#next-page").click()
    page.wait_for_url("**cursor=*")
    page.wait_for_function(
        "ids => document.querySelector('#job-table tbody td').textContent.trim() !== ids[0]", arg=first
    )
    second = page.locator("#job-table tbody tr td:first-child").all_inner_texts()
    assert len(first) == 3
    assert len(second) == 3
    assert int(second[0]) < int(first[-1])
    shot(page, "pandamon", "jobs-page-2")


def test_the_dag_draws_with_state_colours_and_a_node_opens_its_task(page, live_world: World) -> None:
    page.goto(f"/workflow/{live_world.workflow.pk}/")
    page.wait_for_selector("#dag-svg.drawn")
    strokes = page.eval_on_selector_all(
        "#dag-svg rect.dag-box", "els => els.map(e => getComputedStyle(e).stroke)"
    )
    assert len(strokes) == 3  # three tasks
    assert FAILED_RED in strokes  # isr has a failed job
    shot(page, "pandamon", "workflow-dag")
    page.locator("#dag-svg rect.dag-box").nth(strokes.index(FAILED_RED)).click()
    page.wait_for_url(f"**/task/{live_world.tasks['isr'].pk}/")
    page.goto(f"/workflow/{live_world.workflow.pk}/?label=isr")
    page.wait_for_selector("#dag-svg.drawn")
    assert page.locator("#dag-svg g.dag-node").count() == 6
    shot(page, "pandamon", "workflow-dag-jobs")


def test_the_live_log_tail_grows_while_the_job_runs(page, live_world: World) -> None:
    job = live_world.jobs["isr_5"]
    page.goto(f"/job/{job.pandaid}/")
    assert page.locator("#payload-log .chunk").count() == 3
    PayloadLogFactory(job=job, attemptnr=1, sequence=4, text="fresh line from the pilot\n")
    page.wait_for_selector("#payload-log .chunk[data-seq='4']", timeout=10_000)
    assert "fresh line from the pilot" in page.locator("#payload-log").inner_text()
    shot(page, "pandamon", "job-log-tail")
    assert Job.objects.get(pk=job.pk).jobstatus == "running"
