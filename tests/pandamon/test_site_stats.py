"""`/site/<name>/` (pandamon.queries.site_job_stats): the per-queue statistics and the per-node
counts of its ?json equal an independent SQL count over the live and the archived jobs, before and
after the archive move, for windows inside and across the archive's horizon."""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from dispatcher.models import ArchivedJob
from dispatcher.services.archive import jobs_archive_move
from dispatcher.services.pilot_calls.heartbeat import jobs_heartbeat
from dispatcher.services.pilot_calls.messages import PilotUpdate
from dispatcher.services.transitions import job_transition
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory, UserFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

STATES = ("finished", "finished", "failed", "running", "cancelled")
NODES = ("", "wn1", "wn2", "wn3", "wn4")


def _world(rng: random.Random) -> dict[str, Any]:
    """One site of two queues and a neighbour site's queue; workflows ended 40 and 50 days ago (to
    be archived), one ended 2 days ago and one running; jobs of random state, node, times, CPU
    and RSS (some of them unset) spread over each workflow's last 3 days."""
    site = SiteFactory(name="SITE_X")
    queues = [QueueFactory(name="X_1", site=site), QueueFactory(name="X_2", site=site)]
    queues.append(QueueFactory(name="Y_1", site=SiteFactory(name="SITE_Y")))
    owner = UserFactory(username="alice")
    now = timezone.now()
    for ended_days in (50, 40, 2, None):
        ended = now - dt.timedelta(days=ended_days) if ended_days is not None else None
        wf = WorkflowFactory(owner=owner, status="finished" if ended else "running", ended_at=ended)
        task = TaskFactory(workflow=wf, username="alice")
        for _ in range(40):
            state = rng.choice(STATES[:3] if ended else STATES)
            at = (ended or now) - dt.timedelta(minutes=rng.randint(1, 3 * 24 * 60))
            start = at - dt.timedelta(seconds=rng.randint(1, 20_000)) if rng.random() < 0.9 else None
            JobFactory(
                task=task,
                workflow=wf,
                jobstatus=state,
                queue=rng.choice(queues),
                node=rng.choice(NODES),
                statechangetime=at,
                starttime=start,
                endtime=at if state in ("finished", "failed") else None,
                cpu_time_s=rng.uniform(0, 40_000) if rng.random() < 0.8 else None,
                request_cores=rng.choice((1, 4, 8)),
                max_rss_kb=rng.randint(1, 10**7) if rng.random() < 0.8 else None,
            )
    return {"now": now}


def _expected(since: dt.datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per queue and per node of SITE_X, by plain SQL over the live and archived jobs."""
    jobs = (
        "(SELECT computingsite, modificationhost, jobstatus, statechangetime, starttime, endtime,"
        " cpu_time_s, request_cores, max_rss_kb FROM dispatcher_job UNION ALL"
        " SELECT computingsite, modificationhost, jobstatus, statechangetime, starttime, endtime,"
        " cpu_time_s, request_cores, max_rss_kb FROM dispatcher_archivedjob)"
    )
    where = (
        "computingsite IN ('X_1', 'X_2') AND jobstatus IN ('finished', 'failed') AND statechangetime >= %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT computingsite, count(*) FILTER (WHERE jobstatus = 'finished'),"
            " count(*) FILTER (WHERE jobstatus = 'failed'), avg(extract(epoch FROM endtime - starttime)),"
            f" avg(cpu_time_s / request_cores), max(max_rss_kb) FROM {jobs} j WHERE {where} GROUP BY 1",  # noqa: S608
            [since],
        )
        queues = {r[0]: r[1:] for r in cursor.fetchall()}
        cursor.execute(
            "SELECT modificationhost, count(*) FILTER (WHERE jobstatus = 'finished'),"
            f" count(*) FILTER (WHERE jobstatus = 'failed') FROM {jobs} j"  # noqa: S608
            f" WHERE {where} AND modificationhost <> '' GROUP BY 1",
            [since],
        )
        nodes = {r[0]: r[1:] for r in cursor.fetchall()}
    return queues, nodes


def _check(client: Client, since: dt.datetime) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/site/SITE_X/?json&date_from={since:%Y-%m-%dT%H:%M}").json()
    since = since.replace(second=0, microsecond=0)
    queues, nodes = _expected(since)
    got = {q["queue"]: q for q in data["queues"]}
    assert set(got) == set(queues)
    for name, (finished, failed, wall, cpu, max_rss) in queues.items():
        q = got[name]
        assert (q["finished"], q["failed"], q["max_rss_kb"]) == (finished, failed, max_rss)
        assert q["failure_pct"] == pytest.approx(100 * failed / (finished + failed))
        assert q["mean_walltime_s"] == (None if wall is None else pytest.approx(float(wall), rel=1e-9))
        efficiency = 100 * float(cpu) / float(wall) if wall and cpu is not None else None
        assert q["cpu_efficiency_pct"] == (
            None if efficiency is None else pytest.approx(efficiency, rel=1e-9)
        )
    assert {n["node"]: (n["finished"], n["failed"]) for n in data["worker_nodes"]} == nodes
    return data


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _settings() -> Any:
    archive = {
        "JOB_ARCHIVE_AFTER_DAYS": 30,
        "JOB_ARCHIVE_RETENTION_DAYS": 0,
        "JOB_ARCHIVE_BATCH_JOBS": 100_000,
    }
    return override_settings(AILURO={**settings.AILURO, **archive})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_site_numbers_equal_a_plain_count_of_live_and_archived_jobs(postgres_only: None, seed: int) -> None:
    rng = random.Random(seed)
    now = _world(rng)["now"]
    client = Client()
    windows = [now - dt.timedelta(days=d, minutes=rng.randint(0, 600)) for d in (100, 45, 41, 7, 2, 0.5)]
    before = [_check(client, since) for since in windows]
    with _settings():
        assert jobs_archive_move(now=now).jobs > 0
    assert ArchivedJob.objects.filter(jobstatus__in=["finished", "failed"]).exists()
    after = [_check(client, since) for since in windows]
    # The same answers; means to float rounding (the move changes the order floats are summed in).
    for b, a in zip(before, after, strict=True):
        b.pop("generated", None)
        a.pop("generated", None)
        assert _rounded(a) == _rounded(b)
    assert before[0]["queues"] and before[0]["worker_nodes"]


def test_the_live_read_takes_only_columns_of_its_index(postgres_only: None) -> None:
    """Every column the live read names is in job_ended_stats_idx (key or included), so PostgreSQL
    can answer it index-only, and the index's predicate is the read's states."""
    from pandamon.queries import sites

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef('job_ended_stats_idx'::regclass)")
        indexdef = cursor.fetchone()[0]
    indexed = set(re.findall(r"\w+", indexdef.split("USING btree", 1)[1].split("WHERE", 1)[0]))
    sql = sites._ENDED_GROUPS_SQL.format(window="AND statechangetime >= %(since)s")
    named = set(re.findall(r"\b(?:computingsite|statechangetime|jobstatus|ended_\w+)\b", sql))
    assert named <= indexed, named - indexed
    assert "finished" in indexdef.split("WHERE", 1)[1] and "failed" in indexdef.split("WHERE", 1)[1]


def test_a_heartbeat_with_new_metrics_is_still_a_hot_update(postgres_only: None) -> None:
    """The index holds the ended copies of node, CPU and RSS, never the columns a heartbeat
    changes: a heartbeat of a running job with a new node, CPU time and RSS updates its row in
    place (HOT) and touches no index; its copies stay NULL until the job ends."""
    queue = QueueFactory(name="X_1", site=SiteFactory(name="SITE_X"))
    task = TaskFactory()
    job = JobFactory(task=task, jobstatus="defined")
    job_transition(pandaid=job.pandaid, to="activated", cause="test", fields={"queue_id": queue.name})
    job_transition(pandaid=job.pandaid, to="sent", cause="test", fields={"lease": "L"})
    job_transition(pandaid=job.pandaid, to="running", cause="test", fields={"starttime": timezone.now()})
    job.refresh_from_db()

    def hot_updates() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'dispatcher_job'"
            )
            return int(cursor.fetchone()[0])

    before = hot_updates()
    update = PilotUpdate(
        pandaid=job.pandaid,
        status="running",
        attemptnr=job.attemptnr,
        lease="L",
        node="wn9.example.org",
        metrics={"cpu_time_s": 123.0, "max_rss_kb": 4567},
    )
    assert jobs_heartbeat([update], None)[0] is not None
    assert hot_updates() == before + 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT modificationhost, max_rss_kb, ended_node, ended_max_rss_kb, ended_cpu_per_core"
            " FROM dispatcher_job WHERE pandaid = %s",
            [job.pandaid],
        )
        assert cursor.fetchone() == ("wn9.example.org", 4567, None, None, None)
    job_transition(pandaid=job.pandaid, to="finished", cause="test", fields={"endtime": timezone.now()})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ended_node, ended_max_rss_kb, ended_cpu_per_core FROM dispatcher_job WHERE pandaid = %s",
            [job.pandaid],
        )
        assert cursor.fetchone() == ("wn9.example.org", 4567, 123.0 / job.request_cores)
