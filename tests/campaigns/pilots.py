"""A stand-in for pilots until the pilot protocol lands: drive released jobs through the dispatcher
services (`job_transition`, `job_attempt_end`) exactly as the protocol will."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from django.utils import timezone

from dispatcher.models import Job
from dispatcher.services import job_attempt_end, job_transition

Outcome = tuple[str, dict[str, Any]]  # ("finished" | "failed", error columns)
OK: Outcome = ("finished", {})
OOM: Outcome = (
    "failed",
    {"exeerrorcode": 137, "exeerrordiag": "Killed: out of memory (rss 2101 MB > 2000 MB)"},
)
BAD: Outcome = ("failed", {"exeerrorcode": 65, "exeerrordiag": "ValueError: bad input in /data/raw/123.fits"})


def pilots_run(
    *,
    queue: str,
    workflow_ids: Iterable[int],
    outcome: Callable[[Job], Outcome] = lambda job: OK,
    runtime_s: float = 60.0,
    labels: set[str] | None = None,
) -> int:
    """Run every released job of the workflows to its end, wave after wave; returns jobs run."""
    ran = 0
    ids = list(workflow_ids)
    while True:
        selection = Job.objects.filter(workflow_id__in=ids, jobstatus="defined", pending_parents=0)
        if labels is not None:
            selection = selection.filter(label__in=labels)
        ready = list(selection.order_by("pandaid"))
        if not ready:
            return ran
        for job in ready:
            start = timezone.now() - dt.timedelta(seconds=runtime_s)
            job_transition(
                pandaid=job.pandaid, to="activated", cause="test brokerage", fields={"queue_id": queue}
            )
            job_transition(
                pandaid=job.pandaid, to="sent", cause="test getJob", fields={"dispatched_at": start}
            )
            job_transition(pandaid=job.pandaid, to="running", cause="test pilot", fields={"starttime": start})
            status, errors = outcome(job)
            job_attempt_end(
                pandaid=job.pandaid,
                attemptnr=job.attemptnr,
                status=status,
                cause="test pilot final update",
                errors=errors,
                metrics={"max_rss_kb": 1_000_000},
            )
            ran += 1


class ProtocolPilots:
    """Pilots speaking the real v1 pilot protocol over Django's test client: brokerage activates the
    released jobs, `acquire_jobs` dispatches them, `update_job` reports running and the final state.
    `outcome` sees the job description the server sent (jobName, minRamCount, command, …)."""

    ACQUIRE = "/api/v1/pilot/acquire_jobs"
    UPDATE = "/api/v1/pilot/update_job"

    def __init__(self, queue: str) -> None:
        from django.test import Client

        from core.services import token_create

        self.queue = queue
        self.client = Client()
        self.headers = {
            "HTTP_AUTHORIZATION": f"Bearer {token_create(username='e2e-pilots', role='pilot', queues=[queue])}"
        }

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import json

        response = self.client.generic(
            "POST", path, json.dumps(body), content_type="application/json", **self.headers
        )
        assert response.status_code == 200, response.content
        reply: dict[str, Any] = response.json()
        return reply

    def run(self, outcome: Callable[[dict[str, Any]], Outcome]) -> int:
        """Broker, dispatch and run every job that can run, wave after wave; returns jobs run."""
        from dispatcher.services import broker_one_batch

        ran = 0
        while True:
            broker_one_batch()
            reply = self._post(self.ACQUIRE, {"site_name": self.queue, "n_jobs": 100, "node": "wn01"})
            if not reply["success"]:
                assert reply["message"] == "No jobs in PanDA", reply
                return ran
            for job in reply["data"]["jobs"]:
                fence = {"job_id": job["PandaID"], "attempt_nr": job["attemptNr"], "lease": job["lease"]}
                assert self._post(self.UPDATE, {**fence, "job_status": "running"})["success"]
                status, errors = outcome(job)
                final: dict[str, Any] = {**fence, "job_status": status, "max_rss": 1_000_000}
                if errors:
                    final.update(exe_error_code=errors["exeerrorcode"], exe_error_diag=errors["exeerrordiag"])
                assert self._post(self.UPDATE, final)["success"]
                ran += 1
