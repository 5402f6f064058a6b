"""Cluster members follow their cluster's attempts (docs/decisions/0010-clusters-of-member-jobs.md).

A member is a job row of its own label (`Job.cluster` names its cluster job) that is never
dispatched: `pending_parents` keeps one count more than its unfinished parents. When an attempt of
the cluster job ends, `cluster_attempt_settle` gives every member still `defined` its share:

* each member's result comes from the marker lines of the cluster payload's output
  (`ailuro-cluster-member <name> exit=<code>` / `… skipped`, stored as the attempt's payload log);
  a cluster that finished finished every member; a member with no marker after a failed attempt
  (no log: PanDA's pilot; a payload killed before it) failed with the cluster attempt's errors;
* a member that exited 0 is `finished` now (its attempt row, then its children released, inside
  the cluster or not);
* a member that failed has a failed attempt row with its exit code; when the cluster job is retried
  it waits for the next attempt (attempt number + 1) and the cluster's payload is rewritten to run
  only the members not finished (`cluster_command_refresh`); when the cluster failed for good, it is
  `failed` and its descendants are pruned, its finished siblings keep their outputs;
* a member skipped because a parent in the cluster failed is pruned with that parent, or waits
  with it for the retry.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db.models import F, Q

from dispatcher.models import Job, JobAttempt, JobDependency, PayloadLog
from dispatcher.services.release import descendants_prune, job_children_release
from dispatcher.services.transitions import job_transition, jobs_transition_bulk
from dispatcher.states import JobStatus
from dispatcher.workflows.clusters import MemberRun, cluster_command, cluster_markers

log = logging.getLogger(__name__)

DIAG_MAX = 500


def cluster_results(pandaid: int, attemptnr: int) -> dict[str, int | None]:
    """Member name → exit code (None: skipped) from the attempt's stored payload output."""
    chunks = PayloadLog.objects.filter(job_id=pandaid, attemptnr=attemptnr).order_by("sequence")
    return cluster_markers("".join(chunks.values_list("text", flat=True)))


def _member_attempt(
    member: Job, cluster: Job, status: str, endtime: dt.datetime, errors: Mapping[str, Any]
) -> None:
    JobAttempt.objects.create(
        job=member,
        attemptnr=member.attemptnr,
        jobstatus=status,
        queue=cluster.queue_id or "",
        node=cluster.node,
        pilot_id=cluster.pilot_id,
        worker_id=cluster.worker_id,
        request_memory_mb=member.request_memory_mb,
        request_cores=member.request_cores,
        dispatched_at=cluster.dispatched_at,
        starttime=cluster.starttime,
        endtime=endtime,
        **errors,
    )


def cluster_attempt_settle(
    *,
    cluster: Job,
    attemptnr: int,
    outcome: str,
    endtime: dt.datetime,
    errors: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Give the members of `cluster` (its row as the attempt saw it) the results of attempt
    `attemptnr`, which left the cluster job `outcome` (finished, defined for a retry, failed).
    Call in the transaction that ended the attempt. Returns counts by what happened to members.
    """
    members = list(
        Job.objects.select_for_update()
        .filter(cluster_id=cluster.pandaid, jobstatus=JobStatus.DEFINED)
        .order_by("pandaid")
    )
    counts = {"finished": 0, "failed": 0, "skipped": 0, "pruned": 0}
    if not members:
        return counts
    results = {} if outcome == JobStatus.FINISHED else cluster_results(cluster.pandaid, attemptnr)
    cluster_errors = {k: v for k, v in (errors or {}).items() if v}
    where = f"cluster {cluster.name} ({cluster.pandaid}) attempt {attemptnr}"
    failed: list[tuple[Job, dict[str, Any]]] = []
    skipped: list[int] = []
    for member in members:
        code = 0 if outcome == JobStatus.FINISHED else results.get(member.name, -1)
        if code is None:
            skipped.append(member.pandaid)
            continue
        # -1: not run, or not told: the cluster attempt's failure is the member's.
        if code == 0:
            _member_attempt(member, cluster, JobStatus.FINISHED, endtime, {})
            job_transition(
                pandaid=member.pandaid,
                to=JobStatus.FINISHED,
                expect=JobStatus.DEFINED,
                cause=f"{where}: exit 0",
                fields=_ran_fields(cluster, endtime),
            )
            job_children_release(member.pandaid)
            counts["finished"] += 1
            continue
        member_errors = (
            {
                "exeerrorcode": code,
                "exeerrordiag": f"exit code {code} in {where}"[:DIAG_MAX],
                "transexitcode": code,
            }
            if code > 0
            else cluster_errors
            or {"exeerrorcode": 1, "exeerrordiag": f"{where} failed before this member reported"[:DIAG_MAX]}
        )
        _member_attempt(member, cluster, JobStatus.FAILED, endtime, member_errors)
        failed.append((member, member_errors))
    counts["failed"] = len(failed)
    counts["skipped"] = len(skipped)
    if outcome == JobStatus.DEFINED:
        ids = [m.pandaid for m, _ in failed]
        if ids:
            Job.objects.filter(pandaid__in=ids).update(attemptnr=F("attemptnr") + 1)
        cluster_command_refresh([cluster.pandaid])
    elif outcome == JobStatus.FAILED:
        for member, member_errors in failed:
            moved = job_transition(
                pandaid=member.pandaid,
                to=JobStatus.FAILED,
                expect=JobStatus.DEFINED,
                cause=f"{where} failed for good",
                fields={**_ran_fields(cluster, endtime), **member_errors},
            )
            if moved is not None:
                counts["pruned"] += descendants_prune(
                    member.pandaid, cause=f"parent {member.pandaid} failed for good"
                )
        if skipped:
            counts["pruned"] += len(
                jobs_transition_bulk(
                    source=JobStatus.DEFINED,
                    to=JobStatus.PRUNED,
                    cause=f"{where} failed for good",
                    pandaids=skipped,
                )
            )
    log.info(
        "cluster %s attempt %s settled its members: %s",
        cluster.pandaid,
        attemptnr,
        counts,
        extra={"event": "job.cluster_settle", "pandaid": cluster.pandaid, "attemptnr": attemptnr, **counts},
    )
    return counts


def _ran_fields(cluster: Job, endtime: dt.datetime) -> dict[str, Any]:
    return {
        "pending_parents": 0,
        "endtime": endtime,
        "starttime": cluster.starttime,
        "queue_id": cluster.queue_id,
        "node": cluster.node,
        "pilot_id": cluster.pilot_id,
        "dispatched_at": cluster.dispatched_at,
    }


def cluster_command_refresh(cluster_ids: Iterable[int]) -> int:
    """Rewrite each cluster job's payload to run its members that have not finished, in dependency
    order; returns the number of clusters rewritten."""
    ids = list(cluster_ids)
    if not ids:
        return 0
    members = list(
        Job.objects.filter(cluster_id__in=ids)
        .exclude(jobstatus=JobStatus.FINISHED)
        .order_by("pandaid")
        .values("pandaid", "cluster_id", "name", "command", "environment")
    )
    names = {m["pandaid"]: m["name"] for m in members}
    parents: dict[int, list[str]] = {}
    for parent_id, child_id in JobDependency.objects.filter(
        child_id__in=list(names), parent_id__in=list(names)
    ).values_list("parent_id", "child_id"):
        parents.setdefault(child_id, []).append(names[parent_id])
    runs: dict[int, list[MemberRun]] = {}
    for m in members:
        runs.setdefault(m["cluster_id"], []).append(
            MemberRun(m["name"], m["command"], m["environment"] or {}, parents.get(m["pandaid"], []))
        )
    for cluster_id, member_runs in runs.items():
        Job.objects.filter(pandaid=cluster_id).update(command=cluster_command(member_runs))
    return len(runs)


def clusters_rerun_prepare(pandaids: Sequence[int]) -> list[int]:
    """After a restart or retry moved `pandaids` back to `defined`: members keep their extra
    pending count (they run only in their cluster), and the clusters of these jobs get a payload of
    their unfinished members. Returns the cluster jobs concerned."""
    if not pandaids:
        return []
    rerun = Q(pandaid__in=pandaids)
    Job.objects.filter(rerun, cluster__isnull=False, jobstatus=JobStatus.DEFINED).update(
        pending_parents=F("pending_parents") + 1
    )
    clusters = set(Job.objects.filter(rerun, cluster__isnull=False).values_list("cluster_id", flat=True))
    clusters |= set(
        Job.objects.filter(cluster_id__in=list(pandaids)).values_list("cluster_id", flat=True).distinct()
    )
    ordered = sorted(c for c in clusters if c is not None)
    cluster_command_refresh(ordered)
    return ordered
