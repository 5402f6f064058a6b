"""The job archive (dispatcher/services/archive.py): whole final workflows older than the cut-off
move their jobs, attempts, status log, files and edges to the archive tables; every page and API
answer is the same before and after (counts, the job list across the cut-off, the archived job's
page, its workflow's and task's pages, the API detail); archived workflows refuse actions with a
409; the retention drops old archive partitions; the janitor runs the move. On PostgreSQL and on
SQLite (the embedded run)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from core.services import token_create
from dispatcher.loops import janitor_one_batch
from dispatcher.models import (
    ArchivedFile,
    ArchivedJob,
    ArchivedJobAttempt,
    ArchivedJobDependency,
    ArchivedJobStatusLog,
    FailedAttemptChange,
    File,
    Job,
    JobAttempt,
    JobChange,
    JobDependency,
    JobStatusLog,
    PayloadLog,
    TaskCount,
    Workflow,
)
from dispatcher.services import workflow_retry
from dispatcher.services.archive import archive_partitions_drop, jobs_archive_move
from dispatcher.workflows import WorkflowInvalid
from pandamon import rollups
from tests.factories import JobFactory, QueueFactory, TaskFactory, UserFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

ARCHIVE = {"JOB_ARCHIVE_AFTER_DAYS": 30, "JOB_ARCHIVE_RETENTION_DAYS": 0, "JOB_ARCHIVE_BATCH_JOBS": 100_000}


def _settings(**changes: Any) -> Any:
    from django.conf import settings

    return override_settings(AILURO={**settings.AILURO, **ARCHIVE, **changes})


def _workflow(owner: Any, queue: Any, ended: dt.datetime | None, *, running: bool = False) -> Workflow:
    """A workflow of two labels, ended at `ended` (None: still running, one job running): jobs
    finished and failed, one edge per label, files, attempts, status log and payload log."""
    wf = WorkflowFactory(owner=owner, status="running" if ended is None else "finished", ended_at=ended)
    at = ended or timezone.now()
    for label in ("isr", "calib"):
        task = TaskFactory(workflow=wf, label=label, username=owner.username)
        jobs = []
        for k in range(3):
            state = "failed" if k == 2 else "finished"
            if running and k == 0:
                state = "running"
            job = JobFactory(
                task=task,
                workflow=wf,
                jobstatus=state,
                queue=queue,
                statechangetime=at - dt.timedelta(hours=3 * k + 1, minutes=7),
                starttime=at - dt.timedelta(hours=3 * k + 2),
                endtime=at - dt.timedelta(hours=3 * k + 1, minutes=7),
                attemptnr=2 if state == "failed" else 1,
                piloterrorcode=1305 if state == "failed" else 0,
                max_rss_kb=1000 * (k + 1),
            )
            jobs.append(job)
            JobStatusLog.objects.create(
                job=job, attemptnr=1, jobstatus=state, previous="running", time=job.statechangetime
            )
            File.objects.create(job=job, lfn=f"{job.name}.out", role="output")
            PayloadLog.objects.create(job=job, attemptnr=1, sequence=0, text="hello")
            if state == "failed":
                JobAttempt.objects.create(
                    job=job,
                    attemptnr=1,
                    jobstatus="failed",
                    queue=queue.name,
                    piloterrorcode=1305,
                    endtime=job.statechangetime - dt.timedelta(hours=1),
                )
        JobDependency.objects.create(parent=jobs[0], child=jobs[1])
    return wf


@pytest.fixture
def world() -> dict[str, Any]:
    owner = UserFactory(username="alice")
    queue = QueueFactory()
    now = timezone.now()
    return {
        "queue": queue,
        "old": _workflow(owner, queue, now - dt.timedelta(days=45)),
        "older": _workflow(owner, queue, now - dt.timedelta(days=75)),
        "recent": _workflow(owner, queue, now - dt.timedelta(days=2)),
        "old_running": _workflow(owner, queue, None, running=True),
    }


def _pages(world: dict[str, Any]) -> dict[str, Any]:
    """Every page and API answer the archive must not change, as JSON."""
    old: Workflow = world["old"]
    job = (
        Job.objects.filter(workflow=old, jobstatus="failed").first()
        or ArchivedJob.objects.filter(workflow=old, jobstatus="failed").first()
    )
    assert job is not None
    task_id = job.task_id
    client = Client()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='user')}")
    q = world["queue"].name
    urls = [
        "/jobs/?json&days=100",
        "/jobs/?json&days=100&jobstatus=failed",
        f"/jobs/?json&days=100&computingsite={q}",
        "/jobs/?json&days=100&sortby=time-descending&display_limit=5",
        "/jobs/?json&days=100&sortby=time-ascending&display_limit=7",
        "/jobs/?json&days=5",
        f"/jobs/?json&jeditaskid={task_id}",
        f"/jobs/?json&workflow={old.pk}",
        f"/job/{job.pk}/?json",
        f"/workflow/{old.pk}/?json",
        f"/workflow/{old.pk}/?json&label=isr",
        "/dash/?json&days=100",
        "/sites/?json&days=100",
        f"/site/{world['queue'].site.name}/?json&days=100",
        f"/site/{world['queue'].site.name}/?json&date_from={job.statechangetime:%Y-%m-%dT%H:%M}",
        "/errors/?json&days=100",
        f"/errors/?json&days=100&computingsite={q}",
        # Windows whose first edge (a partial hour, scanned) holds archived jobs and attempts.
        f"/jobs/?json&date_from={job.statechangetime:%Y-%m-%dT%H:%M}",
        f"/jobs/?json&date_from={job.statechangetime:%Y-%m-%dT%H:%M}&jobstatus=failed",
        f"/dash/?json&date_from={job.statechangetime:%Y-%m-%dT%H:%M}",
        f"/errors/?json&date_from={job.statechangetime - dt.timedelta(hours=1):%Y-%m-%dT%H:%M}",
        f"/task/{task_id}/?json",
        f"/user/{old.owner.username}/?json&days=100",
    ]
    pages = {url: client.get(url).json() for url in urls}
    for page in pages.values():
        page.pop("generated", None)
        page.pop("loops", None)  # loop lags: time, not jobs
    pages["api"] = api.get(f"/api/v1/jobs/{job.pk}/").json()
    pages["api-attempts"] = api.get(f"/api/v1/jobs/{job.pk}/attempts/").json()
    # The REST lists, whole and filtered, read page by page across the live and archived rows.
    for name, url in (
        ("api-jobs", "/api/v1/jobs/?limit=5"),
        ("api-jobs-failed", "/api/v1/jobs/?limit=3&jobstatus=failed&days=100"),
        ("api-jobs-task", f"/api/v1/jobs/?jeditaskid={task_id}"),
        ("api-jobs-recent", "/api/v1/jobs/?hours=1"),
        ("api-attempts-list", "/api/v1/attempts/?limit=2"),
    ):
        rows: list[Any] = []
        while url:
            reply = api.get(url)
            assert reply.status_code == 200, (url, reply.content)
            rows += reply.json()["results"]
            url = reply.json()["next"] or ""
        pages[name] = rows
    return pages


def _counts() -> tuple[int, int, list[tuple[int, str, int]]]:
    return (
        JobChange.objects.count(),
        FailedAttemptChange.objects.count(),
        sorted(TaskCount.objects.values_list("task_id", "jobstatus", "count")),
    )


def test_the_move_takes_old_final_workflows_only_and_every_page_reads_the_same(world: dict[str, Any]) -> None:
    if rollups.enabled():
        rollups.rollups_fold()
    before, counts = _pages(world), _counts()
    with _settings():
        moved = jobs_archive_move(now=timezone.now())

    assert (moved.workflows, moved.jobs) == (2, 12)
    old_ids = {world["old"].pk, world["older"].pk}
    assert set(Workflow.objects.filter(archived_at__isnull=False).values_list("pk", flat=True)) == old_ids
    assert not Job.objects.filter(workflow_id__in=old_ids).exists()
    assert ArchivedJob.objects.count() == 12 and Job.objects.count() == 12
    assert ArchivedJobAttempt.objects.count() == 4 and JobAttempt.objects.count() == 4
    assert ArchivedFile.objects.count() == 12 and ArchivedJobStatusLog.objects.count() == 12
    assert ArchivedJobDependency.objects.count() == 4 and JobDependency.objects.count() == 4
    assert not PayloadLog.objects.filter(job__workflow_id__in=old_ids).exists()
    # No change-feed row, no per-task count moved.
    assert _counts() == counts
    if rollups.enabled():
        rollups.rollups_fold()
    after = _pages(world)
    # The job page says the job is archived; everything else reads the same.
    job_url = next(url for url in before if url.startswith("/job/"))
    assert (before[job_url].pop("archived"), after[job_url].pop("archived")) == (False, True)
    for url in before:
        assert after[url] == before[url], url
    with _settings():
        assert jobs_archive_move(now=timezone.now()).jobs == 0


def test_an_archived_workflow_refuses_actions_with_409(world: dict[str, Any]) -> None:
    old: Workflow = world["old"]
    failed = Job.objects.filter(workflow=old, jobstatus="failed").values_list("pk", flat=True).first()
    with _settings():
        jobs_archive_move(now=timezone.now())

    with pytest.raises(WorkflowInvalid) as refused:
        workflow_retry(workflow_id=old.pk, actor="alice")
    assert refused.value.status_code == 409 and "archived" in refused.value.message
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='user')}")
    reply = api.post(f"/api/v1/workflows/{old.pk}/retry/", {}, format="json")
    assert reply.status_code == 409 and "archived" in str(reply.json())
    browser = Client()
    browser.force_login(old.owner)
    page = browser.post(f"/job/{failed}/retry/")
    assert page.status_code == 409 and b"archived" in page.content


def test_retention_drops_archived_months_past_it(world: dict[str, Any]) -> None:
    now = timezone.now()
    with _settings():
        jobs_archive_move(now=now)
        assert archive_partitions_drop(now=now) == 0  # 0: kept forever
    with _settings(JOB_ARCHIVE_RETENTION_DAYS=60):
        dropped = archive_partitions_drop(now=now)
    # The workflow ended 75 days ago goes (on PostgreSQL with its whole month, when that month
    # ended more than 60 days ago); the one ended 45 days ago stays.
    assert set(ArchivedJob.objects.values_list("workflow_id", flat=True).distinct()) <= {
        world["old"].pk,
        world["older"].pk,
    }
    assert ArchivedJob.objects.filter(workflow=world["old"]).count() == 6
    if connection.vendor == "postgresql":
        older_month_end = (world["older"].ended_at.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        expected = 1 if older_month_end <= now - dt.timedelta(days=60) else 0
        assert dropped == expected
        assert ArchivedJob.objects.filter(workflow=world["older"]).exists() == (expected == 0)
    else:
        assert dropped == 6 and not ArchivedJob.objects.filter(workflow=world["older"]).exists()


def test_the_janitor_runs_the_move_and_zero_days_turns_it_off(world: dict[str, Any]) -> None:
    with _settings(JOB_ARCHIVE_AFTER_DAYS=0):
        janitor_one_batch(now=timezone.now())
    assert not ArchivedJob.objects.exists()
    with _settings():
        assert janitor_one_batch(now=timezone.now()) >= 12
    assert ArchivedJob.objects.count() == 12


def test_only_the_move_is_muted_a_later_delete_appends_its_change(world: dict[str, Any]) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the change feed is PostgreSQL's")
    with _settings():
        jobs_archive_move(now=timezone.now())
    before = JobChange.objects.filter(delta=-1).count()
    job = Job.objects.filter(workflow=world["recent"]).exclude(parent_edges__isnull=False).first()
    assert job is not None
    JobDependency.objects.filter(parent=job).delete()
    job.delete()
    assert JobChange.objects.filter(delta=-1).count() == before + 1
