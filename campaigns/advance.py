"""The campaign advancer: one round judges running groups, submits waiting ones, moves steps on,
flags stalls and sends notifications. `campaigns_advance_one_round` is the `campaigns` loop's
one-step function (config/loops.py; docs/architecture.md#loops), run under the loop's lease.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from campaigns.models import (
    GROUP_FINAL,
    STEP_FINAL,
    ActionLog,
    ActionResult,
    AttemptKind,
    Campaign,
    CampaignStatus,
    Group,
    GroupAttempt,
    GroupStatus,
    Step,
    StepStatus,
)
from campaigns.notify import notify
from campaigns.progress import eta_estimate, stall_judge
from campaigns.queries import attempts_activity, label_runtime_history
from campaigns.services import campaign_spec, group_chain_jobs, group_submit, group_unsucceeded
from campaigns.spec import cluster_task_labels
from dispatcher.models import Task
from dispatcher.queries import task_state_counts
from dispatcher.services.budgets import BUDGET_REASON_PREFIX
from dispatcher.states import JOB_FINAL, JobStatus, TaskStatus

log = logging.getLogger(__name__)

ADVANCER = "advancer"


def campaigns_advance_one_round(*, now: dt.datetime | None = None) -> int:
    """Advance every running campaign once; returns how many changes (group judged, group
    submitted, step moved, campaign ended, stall flagged) it made. Each campaign is its own
    transaction with the campaign row locked, so a second round running meanwhile waits for it."""
    changes = 0
    ids = list(
        Campaign.objects.filter(status=CampaignStatus.RUNNING).order_by("pk").values_list("pk", flat=True)
    )
    for campaign_id in ids:
        changes += campaign_advance(campaign_id=campaign_id, now=now)
    return changes


@transaction.atomic
def campaign_advance(*, campaign_id: int, now: dt.datetime | None = None) -> int:
    """One campaign, one transaction. Steps:

    1. Judge every running group from its attempt's exact job counts: progress, ETA, stall; when
       nothing is in flight, accepted if every planned job finished in some attempt, else failed.
    2. The current step (first not final): waiting → running, or blocked at a breakpoint; a running
       step submits waiting groups up to its throttle; when all its groups are final it is done
       (failed if one was rejected) and the next step starts in the same round.
    3. No step left → the campaign is done.
    """
    now = now or timezone.now()
    campaign = (
        Campaign.objects.select_for_update().filter(pk=campaign_id, status=CampaignStatus.RUNNING).first()
    )
    if campaign is None:
        return 0
    spec = campaign_spec(campaign)
    changes = _budget_pauses_notify(campaign, spec)
    changes += _groups_judge(campaign, spec, now)
    while True:
        step = (
            Step.objects.select_for_update()
            .filter(campaign=campaign)
            .exclude(status__in=STEP_FINAL)
            .order_by("position")
            .first()
        )
        if step is None:
            Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.DONE, ended_at=now)
            _audit(campaign, "complete", "campaign", campaign.pk, "every step done")
            notify(
                spec, "completion", {"campaign": campaign.name, "campaign_id": campaign.pk, "status": "done"}
            )
            return changes + 1
        if step.status in (StepStatus.PAUSED, StepStatus.BLOCKED):
            return changes
        if step.status == StepStatus.WAITING:
            if step.breakpoint and step.started_at is None:
                Step.objects.filter(pk=step.pk).update(status=StepStatus.BLOCKED)
                _audit(
                    campaign,
                    "block",
                    "step",
                    step.pk,
                    f"breakpoint before {step.name}: waits for an operator",
                )
                return changes + 1
            Step.objects.filter(pk=step.pk).update(
                status=StepStatus.RUNNING, started_at=step.started_at or now
            )
            changes += 1
        changes += _groups_submit(step, now)
        counts = dict(
            Group.objects.filter(step=step)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        if any(s not in GROUP_FINAL for s in counts):
            return changes
        if counts.get(GroupStatus.REJECTED):
            Step.objects.filter(pk=step.pk).update(status=StepStatus.FAILED, ended_at=now)
            Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.FAILED, ended_at=now)
            message = f"step {step.name} ended with {counts[GroupStatus.REJECTED]} rejected group(s)"
            _audit(campaign, "fail", "campaign", campaign.pk, message)
            notify(
                spec,
                "failure",
                {
                    "campaign": campaign.name,
                    "campaign_id": campaign.pk,
                    "step": step.name,
                    "message": message,
                },
            )
            return changes + 1
        Step.objects.filter(pk=step.pk).update(status=StepStatus.DONE, ended_at=now)
        changes += 1


def _audit(campaign: Campaign, verb: str, object_type: str, object_id: int, message: str) -> None:
    ActionLog.objects.create(
        campaign=campaign,
        actor=ADVANCER,
        verb=verb,
        object_type=object_type,
        object_id=object_id,
        result=ActionResult.OK,
        message=message[:500],
    )


def _groups_submit(step: Step, now: dt.datetime) -> int:
    running = Group.objects.filter(step=step, status=GroupStatus.RUNNING).count()
    room = int(str(settings.CAMPAIGNS["SUBMIT_PER_ROUND"]))
    if step.max_running_groups:
        room = min(room, step.max_running_groups - running)
    if room <= 0:
        return 0
    waiting = list(
        Group.objects.select_for_update(skip_locked=True)
        .filter(step=step, status=GroupStatus.WAITING)
        .order_by("position")[:room]
    )
    for group in waiting:
        group_submit(group=group, kind=AttemptKind.SUBMIT, actor=ADVANCER)
    return len(waiting)


def _groups_judge(campaign: Campaign, spec: Mapping[str, Any], now: dt.datetime) -> int:
    groups = list(
        Group.objects.select_for_update(skip_locked=True)
        .filter(campaign=campaign, status=GroupStatus.RUNNING)
        .order_by("pk")
    )
    if not groups:
        return 0
    workflow_of = dict(
        GroupAttempt.objects.filter(group__in=groups)
        .filter(attempt=F("group__attempt"))
        .values_list("group_id", "workflow_id")
    )
    # Cluster jobs are not counted: their members are (done and in flight).
    tasks = list(
        Task.objects.filter(workflow_id__in=workflow_of.values())
        .exclude(label__in=cluster_task_labels(spec))
        .values_list("jeditaskid", "workflow_id", "label", "walltime_s")
    )
    counts = task_state_counts([t[0] for t in tasks])
    history = label_runtime_history({t[2] for t in tasks}, now=now)
    requests_s: dict[str, float] = {}
    for _task_id, _wf, label, walltime in tasks:
        requests_s[label] = max(requests_s.get(label, 0.0), float(walltime))
    activity = attempts_activity(set(workflow_of.values()))
    floor_s = float(spec["stall_after_s"])
    changes = 0
    for group in groups:
        workflow_id = workflow_of[group.pk]
        done = 0
        in_flight: dict[str, int] = {}
        for task_id, wf, label, _walltime in tasks:
            if wf != workflow_id:
                continue
            for status, n in counts[task_id].items():
                if status == JobStatus.FINISHED:
                    done += n  # progress: finished jobs only; failed, cancelled, pruned are not done
                if status not in JOB_FINAL and n:
                    in_flight[label] = in_flight.get(label, 0) + n
        update: dict[str, Any] = {}
        if done != group.jobs_done:
            update.update(jobs_done=min(done, group.jobs_total), progress_at=now)
        if in_flight:
            act = activity[workflow_id]
            update["eta"], update["eta_basis"] = eta_estimate(
                now=now,
                previous=group.eta,
                in_flight=in_flight,
                activity=act,
                history=history,
                requests_s=requests_s,
            )
            stall = stall_judge(
                now=now,
                last_activity=max((t for t in (group.activity_at, group.progress_at) if t), default=now),
                cpu_seen_s=group.cpu_seen_s,
                activity=act,
                history=history,
                requests_s=requests_s,
                floor_s=floor_s,
            )
            update.update(
                activity_at=stall.activity_at,
                cpu_seen_s=stall.cpu_seen_s,
                stall_basis=stall.basis,
                stalled=stall.stalled,
            )
            if stall.stalled and not group.stalled:
                since = stall.activity_at.isoformat()
                _audit(campaign, "stall", "group", group.pk, f"stalled: {stall.basis}")
                notify(
                    spec,
                    "stall",
                    {
                        "campaign": campaign.name,
                        "group": group.name,
                        "group_id": group.pk,
                        "since": since,
                        "basis": stall.basis,
                    },
                )
                changes += 1
        else:
            missing = group_unsucceeded(group, group_chain_jobs(group), spec)
            update.update(eta=None, eta_basis="", stalled=False, stall_basis="", ended_at=now)
            if missing:
                update["status"] = GroupStatus.FAILED
                if not group.failure_notified:
                    update["failure_notified"] = True
                    notify(
                        spec,
                        "failure",
                        {
                            "campaign": campaign.name,
                            "group": group.name,
                            "group_id": group.pk,
                            "attempt": group.attempt,
                            "missing": len(missing),
                        },
                    )
                _audit(
                    campaign,
                    "fail",
                    "group",
                    group.pk,
                    f"attempt {group.attempt}: {len(missing)} jobs without outputs",
                )
            else:
                update["status"] = GroupStatus.ACCEPTED
                _audit(campaign, "accept", "group", group.pk, f"attempt {group.attempt}: every job finished")
            changes += 1
        if update:
            Group.objects.filter(pk=group.pk).update(**update)
    return changes


def _budget_pauses_notify(campaign: Campaign, spec: Mapping[str, Any]) -> int:
    """Tasks of the campaign's running groups that their failure budget paused
    (dispatcher/services/budgets.py): each pause is logged once in the audit log (verb
    `budget_pause` on the group, the task and pause time in its params, which also mark it as
    told) and sent to the webhook as a `budget` event. Returns pauses told."""
    attempts = dict(
        GroupAttempt.objects.filter(group__campaign=campaign, group__status=GroupStatus.RUNNING)
        .filter(attempt=F("group__attempt"))
        .values_list("workflow_id", "group_id")
    )
    if not attempts:
        return 0
    paused = Task.objects.filter(
        workflow_id__in=list(attempts),
        status=TaskStatus.PAUSED,
        pause_reason__startswith=BUDGET_REASON_PREFIX,
        paused_at__isnull=False,
    ).values_list("jeditaskid", "workflow_id", "label", "pause_reason", "paused_at")
    told = 0
    for jeditaskid, workflow_id, label, reason, paused_at in paused:
        if paused_at is None:  # filtered above; for the type checker
            continue
        group_id = attempts[workflow_id]
        params = {"jeditaskid": jeditaskid, "paused_at": paused_at.isoformat()}
        if ActionLog.objects.filter(
            campaign=campaign,
            verb="budget_pause",
            object_type="group",
            object_id=group_id,
            params__jeditaskid=jeditaskid,
            params__paused_at=params["paused_at"],
        ).exists():
            continue
        ActionLog.objects.create(
            campaign=campaign,
            actor=ADVANCER,
            verb="budget_pause",
            object_type="group",
            object_id=group_id,
            params={**params, "workflow_id": workflow_id, "label": label},
            result=ActionResult.OK,
            message=f"task {jeditaskid} ({label}) paused: {reason}"[:500],
        )
        notify(
            spec,
            "budget",
            {
                "campaign": campaign.name,
                "campaign_id": campaign.pk,
                "group_id": group_id,
                "workflow_id": workflow_id,
                "jeditaskid": jeditaskid,
                "label": label,
                "reason": reason,
                "paused_at": params["paused_at"],
            },
        )
        told += 1
    return told
