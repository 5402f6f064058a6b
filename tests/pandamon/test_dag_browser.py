"""The DAG views, the workflow timeline and a campaign's group bars in a real browser (Debian's
chromium under Playwright, against a live server).

The task DAG draws one arrowhead (`marker-end`) per edge and each box says its task's counts as
the database has them; a job's neighbourhood shows exactly its parents and children; the timeline
draws one bar per attempt; a failed campaign group's bar is never green. Screenshots are kept under
var/artifacts/screenshots/dag/.
"""

from __future__ import annotations

import os

import pytest

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import GroupAttempt
from campaigns.services import campaign_create, campaign_launch
from dispatcher.models import Job, JobAttempt, JobDependency
from dispatcher.queries import task_state_counts
from pandamon.queries.workflows import workflow_task_edges
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import BAD, OK, pilots_run
from tests.factories import QueueFactory, UserFactory
from tests.pandamon.conftest import World, shot

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

GREENS = {"rgb(31, 122, 61)", "rgb(46, 158, 91)"}  # finished and running in ailuro.css
FAILED_RED = "rgb(198, 40, 40)"

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]


def test_the_task_dag_has_one_arrowhead_per_edge_and_each_box_the_tasks_counts(
    page, live_world: World
) -> None:
    w = live_world
    page.goto(f"/workflow/{w.workflow.pk}/")
    page.wait_for_selector("#dag-svg.drawn")
    shot(page, "dag", "task-dag")
    edges = workflow_task_edges(w.workflow)
    drawn = page.eval_on_selector_all(
        "#dag-svg path.dag-edge",
        "els => els.map(e => [Number(e.dataset.from), Number(e.dataset.to), e.getAttribute('marker-end')])",
    )
    assert sorted((a, b) for a, b, _ in drawn) == sorted(edges)
    assert all(m and m.startswith("url(#") for _, _, m in drawn)
    # Every marker-end names a marker that exists, and nothing else in the SVG draws arrowheads.
    assert page.locator("#dag-svg [marker-end]").count() == len(edges)
    assert page.locator("#dag-svg marker").count() == 1
    counts = task_state_counts([t.pk for t in w.tasks.values()])
    boxes = page.eval_on_selector_all(
        "#dag-svg g.dag-node",
        """els => els.map(e => ({id: Number(e.dataset.id), text: e.querySelector('.dag-counts').textContent,
             title: e.querySelector('.dag-title').textContent,
             bar: Array.from(e.querySelectorAll('.dag-bar rect')).map(r => [r.dataset.state, Number(r.dataset.count), r.getAttribute('fill')])}))""",
    )
    assert sorted(b["id"] for b in boxes) == sorted(t.pk for t in w.tasks.values())
    for box in boxes:
        c = {s: n for s, n in counts[box["id"]].items() if n}
        label = next(lbl for lbl, t in w.tasks.items() if t.pk == box["id"])
        assert box["title"] == label
        total = sum(c.values())
        assert box["text"].split(" · ")[0] == f"{total} job{'s' if total != 1 else ''}"
        for state, n in c.items():
            assert f"{n} {state}" in box["text"], (box, state)
        assert {s: n for s, n, _ in box["bar"]} == c
    isr = next(b for b in boxes if b["id"] == w.tasks["isr"].pk)
    assert ["failed", 1, "#c62828"] in [list(x) for x in isr["bar"]]
    # Wheel zooms, drag pans; a click (no drag) on a box opens its task.
    before = page.get_attribute("#dag-svg svg", "viewBox")
    page.locator("#dag-svg svg").hover()
    page.mouse.wheel(0, -300)
    assert page.get_attribute("#dag-svg svg", "viewBox") != before
    page.locator(f'#dag-svg g.dag-node[data-id="{w.tasks["calib"].pk}"] rect.dag-box').click()
    page.wait_for_url(f"**/task/{w.tasks['calib'].pk}/")


def test_a_job_neighbourhood_shows_exactly_its_parents_and_children(page, live_world: World) -> None:
    job = live_world.jobs["calib_2"]
    parents = set(JobDependency.objects.filter(child=job).values_list("parent_id", flat=True))
    children = set(JobDependency.objects.filter(parent=job).values_list("child_id", flat=True))
    assert parents and children
    page.goto(f"/job/{job.pandaid}/")
    page.locator("#job-dag-link").click()
    page.wait_for_url(f"**/job/{job.pandaid}/dag/")
    page.goto(f"/job/{job.pandaid}/dag/?depth=1")
    page.wait_for_selector("#dag-svg.drawn")
    shot(page, "dag", "job-neighbourhood")
    ids = set(page.eval_on_selector_all("#dag-svg g.dag-node", "els => els.map(e => Number(e.dataset.id))"))
    assert ids == parents | children | {job.pandaid}
    drawn = page.eval_on_selector_all(
        "#dag-svg path.dag-edge[marker-end]",
        "els => els.map(e => [Number(e.dataset.from), Number(e.dataset.to)])",
    )
    assert sorted(map(tuple, drawn)) == sorted(
        [(p, job.pandaid) for p in parents] + [(job.pandaid, c) for c in children]
    )
    assert page.locator("#dag-svg g.dag-node.focus").get_attribute("data-id") == str(job.pandaid)
    # Above the cap, one box per label with its counts.
    page.goto(f"/job/{job.pandaid}/dag/?depth=2&cap=2")
    page.wait_for_selector("#dag-svg.drawn")
    assert page.locator("#dag-collapsed").is_visible()
    labels = page.eval_on_selector_all("#dag-svg g.dag-node", "els => els.map(e => e.dataset.id).sort()")
    assert labels == sorted(Job.objects.filter(pk__in=ids).values_list("label", flat=True).distinct())
    shot(page, "dag", "job-neighbourhood-collapsed")


def test_the_timeline_draws_one_bar_per_attempt_coloured_by_its_outcome(page, live_world: World) -> None:
    wf = live_world.workflow
    recorded = set(JobAttempt.objects.filter(job__workflow=wf).values_list("job_id", "attemptnr"))
    current = {
        (j.pandaid, j.attemptnr)
        for j in Job.objects.filter(workflow=wf)
        if (j.starttime or j.endtime) and (j.pandaid, j.attemptnr) not in recorded
    }
    page.goto(f"/workflow/{wf.pk}/")
    page.wait_for_selector("#workflow-timeline.drawn")
    shot(page, "dag", "workflow-timeline")
    bars = page.eval_on_selector_all(
        "#workflow-timeline rect.timeline-bar",
        "els => els.map(e => [Number(e.dataset.pandaid), Number(e.dataset.attempt), e.dataset.state, e.getAttribute('fill')])",
    )
    assert sorted((p, a) for p, a, _, _ in bars) == sorted(recorded | current)
    assert len(bars) == len(recorded) + len(current)
    for _, _, state, fill in bars:
        if state == "failed":
            assert fill == "#c62828"
    assert any(state == "failed" for _, _, state, _ in bars)


def test_a_failed_campaign_group_is_never_green(page, transactional_db: None) -> None:
    operator = UserFactory(username="operator")
    queue = QueueFactory(name="TEST_QUEUE", max_rss_mb=64000)
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    campaigns_advance_one_round()
    wfs = list(GroupAttempt.objects.values_list("workflow_id", flat=True))
    pilots_run(queue=queue.name, workflow_ids=wfs, outcome=lambda j: BAD if j.name == "isr_4" else OK)
    campaigns_advance_one_round()
    page.goto(f"/campaign/{campaign.pk}/")
    shot(page, "dag", "campaign-failed-group")
    failed = page.locator('.group-bar[data-status="failed"]')
    assert failed.count() >= 1
    for bar in failed.all():
        colours = bar.evaluate(
            "b => Array.from(b.querySelectorAll('span')).filter(s => s.getBoundingClientRect().width > 0)"
            ".map(s => getComputedStyle(s).backgroundColor)"
        )
        assert colours, "the failed group's bar draws its progress"
        assert not GREENS & set(colours), colours
        assert FAILED_RED in colours
    accepted = page.locator('.group-bar[data-status="accepted"] span').first
    assert accepted.evaluate("s => getComputedStyle(s).backgroundColor") in GREENS
