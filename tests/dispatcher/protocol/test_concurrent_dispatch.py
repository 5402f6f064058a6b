"""32 concurrent pilots drain 5,000 jobs on PostgreSQL: no job is dispatched twice, and no pilot is
told "no jobs" while an unlocked activated job exists."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from dispatcher.models import Job, JobStatusLog, Queue
from dispatcher.queries import task_state_counts
from dispatcher.services import task_count_deltas_add
from tests.dispatcher.protocol.conftest import Pilot
from tests.factories import TaskFactory

N_JOBS = 5000
N_PILOTS = 32


def _unlocked_activated(queue: str) -> int:
    """Activated jobs no claim holds right now. Rows only ever go locked → sent, never back, so an
    unlocked activated row now was unlocked when the pilot was told "no jobs" too."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT pandaid FROM dispatcher_job WHERE computingsite = %s"
            " AND jobstatus = 'activated' FOR UPDATE SKIP LOCKED) AS free",
            [queue],
        )
        (n,) = cursor.fetchone()
    return int(n)


@pytest.mark.django_db(transaction=True)
def test_32_pilots_drain_5000_jobs_without_duplicates_or_false_no_jobs(
    postgres_only: None, queue: Queue, token: str
) -> None:
    task = TaskFactory()
    Job.objects.bulk_create(
        [
            Job(
                task=task,
                workflow=task.workflow,
                name=f"j{i}",
                label=task.label,
                command="true",
                produsername=task.username,
                jobstatus="activated",
                queue=queue,
                currentpriority=i % 7,
            )
            for i in range(N_JOBS)
        ],
        batch_size=1000,
    )
    task_count_deltas_add({(task.pk, "activated"): N_JOBS})
    got: list[int] = []
    false_no_jobs: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run_pilot(n: int) -> None:
        pilot = Pilot(token)
        mine: list[int] = []
        try:
            while True:
                reply = pilot.json(
                    "/api/v1/pilot/acquire_jobs", {"site_name": queue.name, "node": f"wn{n:03d}"}
                )
                if reply.status_code != 200:
                    errors.append(f"{reply.status_code} {reply.content[:200]!r}")
                    return
                body = reply.json()
                if not body["success"]:
                    left = _unlocked_activated(queue.name)
                    if left:
                        with lock:
                            false_no_jobs.append(left)
                    return
                mine.extend(job["PandaID"] for job in body["data"]["jobs"])
        finally:
            with lock:
                got.extend(mine)
            connections.close_all()

    threads = [threading.Thread(target=run_pilot, args=(n,)) for n in range(N_PILOTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)

    assert errors == []
    assert false_no_jobs == []
    duplicates = [pandaid for pandaid, n in Counter(got).items() if n > 1]
    assert duplicates == []
    assert len(got) == N_JOBS
    assert Job.objects.filter(jobstatus="sent").count() == N_JOBS
    assert JobStatusLog.objects.filter(jobstatus="sent").values("job_id").distinct().count() == N_JOBS
    assert JobStatusLog.objects.filter(jobstatus="sent").count() == N_JOBS
    assert task_state_counts([task.pk])[task.pk] == {"sent": N_JOBS}
