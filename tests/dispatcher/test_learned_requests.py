"""Learned requests: once `min_samples` attempts of an opted-in label finished with measurements
(through the pilot protocol's services), the `requests` loop moves the memory and walltime requests
of its jobs not yet dispatched to p-th percentile × margin, rounded up, capped by the label's cap and
the queues; the job page and the job API say why; the jobs then run on a queue their learned
request fits.

Runs on PostgreSQL and on SQLite: `DATABASE_URL=sqlite:////tmp/x.sqlite3 python -m pytest -q
tests/dispatcher/test_learned_requests.py`."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from config.loops import loop_named
from core.services import token_create
from dispatcher.models import Job, Queue, Task
from dispatcher.services import (
    DispatchRequest,
    PilotUpdate,
    broker_one_batch,
    job_pilot_update,
    jobs_dispatch,
)
from dispatcher.services.learning import learned_requests, percentile, requests_learn
from dispatcher.services.submit import workflow_submit_spec
from dispatcher.workflows import WorkflowInvalid
from tests.factories import QueueFactory, UserFactory

pytestmark = pytest.mark.django_db

BIG, SMALL = "Q_BIG", "Q_SMALL"


def _spec(learn: Any, *, n: int = 30, memory_mb: int = 4000) -> dict[str, Any]:
    return {
        "name": "learning",
        "labels": {
            "calib": {"learn_requests": learn, "resources": {"memory_mb": memory_mb, "walltime_s": 3600}}
        },
        "jobs": [{"name": f"calib{i}", "label": "calib", "command": "calibrate"} for i in range(n)],
    }


def _finish(queue: str, *, rss_mb: float, walltime_s: float) -> int:
    """One pilot cycle on `queue`: dispatch one job, running since `walltime_s` ago, finished with
    its measured peak RSS; returns the pandaid."""
    broker_one_batch(limit=100)
    got = jobs_dispatch(request=DispatchRequest(queue=queue, n_jobs=1, node="wn1"))
    assert len(got) == 1, f"nothing dispatched on {queue}"
    job = got[0]
    now = timezone.now()
    common = {"pandaid": job["pandaid"], "attemptnr": job["attemptnr"], "lease": job["lease"]}
    job_pilot_update(
        update=PilotUpdate(status="running", starttime=now - dt.timedelta(seconds=walltime_s), **common),
        queues=None,
    )
    reply = job_pilot_update(
        update=PilotUpdate(
            status="finished", endtime=now, metrics={"max_rss_kb": int(rss_mb * 1024)}, **common
        ),
        queues=None,
    )
    assert reply.command is None, reply
    return int(job["pandaid"])


@pytest.fixture
def queues() -> None:
    QueueFactory(name=BIG, max_rss_mb=8000, max_walltime_s=86400)
    QueueFactory(name=SMALL, max_rss_mb=2000, max_walltime_s=7200)


def test_twenty_measured_attempts_move_the_waiting_jobs_requests_and_they_run_where_they_fit(
    queues: None,
) -> None:
    wf = workflow_submit_spec(owner=UserFactory(username="alice"), spec=_spec(True))
    task = Task.objects.get(workflow=wf)
    assert task.learn_requests == {"percentile": 95, "margin": 1.2, "min_samples": 20}
    rss = [1000 + 24 * i for i in range(20)]  # 1000 … 1456 MB
    walls = [300 + 9 * i for i in range(20)]  # 300 … 471 s
    for i in range(19):
        _finish(BIG, rss_mb=rss[i], walltime_s=walls[i])
    assert requests_learn() == 0  # 19 samples: not yet
    assert Task.objects.get(pk=task.pk).learned is None
    _finish(BIG, rss_mb=rss[19], walltime_s=walls[19])
    waiting = set(
        Job.objects.filter(task=task, jobstatus__in=["defined", "activated"]).values_list("pk", flat=True)
    )
    assert len(waiting) == 10 and Job.objects.filter(task=task, jobstatus="activated").exists()

    assert loop_named("requests").run() == 10  # the loop table's entry
    p95_mb, p95_s = rss[18], walls[18]  # nearest rank: the 19th of 20
    memory = math.ceil(p95_mb * 1.2 / 100) * 100
    walltime = math.ceil(p95_s * 1.2 / 60) * 60
    assert (memory, walltime) == (1800, 600)
    reason = (
        f"memory 4000→{memory} MB and walltime 3600→{walltime} s learned from 20 finished attempts: "
        f"p95 {p95_mb} MB × 1.2, rounded up to 100 MB; p95 {p95_s} s × 1.2, rounded up to a minute"
    )
    rows = list(
        Job.objects.filter(pk__in=waiting).values_list(
            "jobstatus", "request_memory_mb", "request_walltime_s", "request_reason", "queue_id"
        )
    )
    assert rows == [("defined", memory, walltime, reason, None)] * 10
    learned = Task.objects.get(pk=task.pk).learned
    assert learned["memory_mb"] == {"from": 4000, "to": 1800, "measured_mb": p95_mb}
    assert learned["samples"] == 20 and learned["reason"] == reason
    # Once per task: a second run changes nothing.
    assert requests_learn() == 0

    # The job page and the API say why.
    one = min(waiting)
    page = Client().get(f"/job/{one}/").content.decode()
    assert 'id="request-reason"' in page and reason in page
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='user')}")
    body = api.get(f"/api/v1/jobs/{one}/").json()
    assert (body["request_memory_mb"], body["request_walltime_s"], body["request_reason"]) == (
        1800,
        600,
        reason,
    )
    assert Client().get(f"/task/{task.pk}/?json").json()["learned_requests"]["reason"] == reason

    # They now fit the small queue: with the big one closed to brokerage, they run there.
    Queue.objects.filter(name=BIG).update(status="brokeroff")
    assert broker_one_batch(limit=100) == 10
    assert set(Job.objects.filter(pk__in=waiting).values_list("queue_id", flat=True)) == {SMALL}
    got = jobs_dispatch(request=DispatchRequest(queue=SMALL, n_jobs=20, memory_mb=2000, node="wn2"))
    assert {j["pandaid"] for j in got} == waiting


def test_learning_is_capped_by_the_queues_and_lowers_or_raises(queues: None) -> None:
    wf = workflow_submit_spec(
        owner=UserFactory(),
        spec=_spec({"percentile": 50, "margin": 1.5, "min_samples": 3}, n=6, memory_mb=3000),
    )
    task = Task.objects.get(workflow=wf)
    for rss in (6000, 6500, 7000):  # × 1.5 is above every queue
        _finish(BIG, rss_mb=rss, walltime_s=4000)
    assert requests_learn() == 3
    job = Job.objects.filter(task=task, jobstatus="defined").first()
    assert job is not None
    assert (job.request_memory_mb, job.request_walltime_s) == (8000, 6000)  # raised; memory at the cap
    assert "p50 6500 MB × 1.5, rounded up to 100 MB, capped at 8000 MB" in job.request_reason


def test_jobs_changed_otherwise_keep_their_requests_and_labels_not_opted_in_learn_nothing(
    queues: None,
) -> None:
    wf = workflow_submit_spec(owner=UserFactory(), spec=_spec({"min_samples": 2}, n=5))
    task = Task.objects.get(workflow=wf)
    boosted = Job.objects.filter(task=task).order_by("-pandaid").first()
    assert boosted is not None
    Job.objects.filter(pk=boosted.pk).update(request_memory_mb=6000)  # as an operator's set-memory would
    for _ in range(2):
        _finish(BIG, rss_mb=1000, walltime_s=100)
    assert requests_learn() == 2
    assert Job.objects.get(pk=boosted.pk).request_memory_mb == 6000
    off = workflow_submit_spec(owner=UserFactory(), spec=_spec(None, n=3))
    assert Task.objects.get(workflow=off).learn_requests is None
    assert requests_learn() == 0


@pytest.mark.parametrize(
    ("learn", "message"),
    [
        ({"percentile": 20}, "labels.calib.learn_requests.percentile must be a number between 50 and 100"),
        ({"margin": 0.5}, "labels.calib.learn_requests.margin must be a number between 1.0 and 10.0"),
        ({"min_samples": 0}, "labels.calib.learn_requests.min_samples must be an integer at least 1"),
        ({"samples": 3}, "labels.calib.learn_requests has unknown key 'samples'"),
        ("yes", "labels.calib.learn_requests must be true, false or a mapping"),
    ],
)
def test_a_bad_learn_setting_is_refused_naming_the_field(learn: Any, message: str) -> None:
    with pytest.raises(WorkflowInvalid) as refused:
        workflow_submit_spec(owner=UserFactory(), spec=_spec(learn))
    assert str(refused.value).startswith(message)


def test_the_percentile_is_a_measured_value() -> None:
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile([5, 1, 4, 2, 3], 95) == 5
    assert percentile([7], 95) == 7
    out = learned_requests(
        rss_kb=[1024 * 100] * 3,
        walltimes_s=[10.0] * 3,
        policy={"percentile": 95, "margin": 1.2},
        memory_mb=2000,
        walltime_s=3600,
        memory_cap_mb=64000,
        walltime_cap_s=86400,
        round_mb=100,
    )
    # Never below one rounding unit of memory, or a minute of walltime.
    assert (out["memory_mb"]["to"], out["walltime_s"]["to"]) == (200, 60)
