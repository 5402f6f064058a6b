"""The demo workflow of the embedded run: a small Rubin-like DAG (isr → calibrate → coadd)."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from dispatcher.models import Workflow
from dispatcher.services import NewJob, workflow_submit


def demo_workflow_submit(*, visits: int = 4, detectors: int = 3) -> Workflow:
    owner, _ = get_user_model().objects.get_or_create(username="demo")
    jobs: list[NewJob] = []
    for visit in range(visits):
        for detector in range(detectors):
            data_id = {"visit": 1000 + visit, "detector": detector}
            isr = f"isr_{1000 + visit}_{detector}"
            jobs.append(
                NewJob(
                    name=isr,
                    label="isr",
                    command=f"echo isr visit={1000 + visit} detector={detector}; sleep 2",
                    memory_mb=2000,
                    data_id=data_id,
                )
            )
            jobs.append(
                NewJob(
                    name=f"calibrate_{1000 + visit}_{detector}",
                    label="calibrate",
                    parents=[isr],
                    command=f"echo calibrate visit={1000 + visit} detector={detector}; sleep 3",
                    memory_mb=4000,
                    data_id=data_id,
                )
            )
    jobs.append(
        NewJob(
            name="coadd",
            label="coadd",
            command="echo coadd all visits; sleep 2",
            memory_mb=3000,
            parents=[job.name for job in jobs if job.label == "calibrate"],
        )
    )
    return workflow_submit(
        owner=owner,
        name="demo-step1",
        jobs=jobs,
        spec={"demo": True, "visits": visits, "detectors": detectors},
    )
