"""Verbs on a group: submit its next attempt (the advancer's and the recovery verbs' way to make
jobs), pause and resume it, and the recovery verbs: restart, rescue (a selective re-run, with its
preview), retry, accept, reject. Jobs are made only through `dispatcher.services.workflow_submit`
and re-run through `workflow_restart`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from django.db.models import F
from django.utils import timezone

from campaigns.models import (
    AttemptKind,
    Campaign,
    CampaignStatus,
    Group,
    GroupAttempt,
    GroupStatus,
    Step,
    StepStatus,
)
from campaigns.selection import Selection, error_template
from campaigns.services.actions import ActionOutcome, ActionRefused, action_run
from campaigns.services.campaign_actions import campaign_spec
from campaigns.spec import SpecInvalid, config_resolve, downstream_of, jobs_plan, sites_parse
from campaigns.spec_checks import FieldInvalid, rescue_check
from dispatcher.brokerage import SiteRule
from dispatcher.models import Job, Workflow
from dispatcher.retry import ERROR_FIELDS
from dispatcher.services import NewJob, workflow_pause, workflow_restart, workflow_resume, workflow_submit
from dispatcher.states import JOB_NON_FINAL, JOB_RESTARTABLE, WORKFLOW_FINAL, JobStatus, WorkflowStatus
from dispatcher.workflows import LabelSettings


def group_pause(*, group_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """The advancer neither submits nor judges a paused group, and a running group's workflow is
    paused with it (`workflow_pause`: its activated jobs are taken back, nothing new is brokered;
    jobs already dispatched finish)."""

    def body() -> ActionOutcome:
        group = Group.objects.select_for_update().get(pk=group_id)
        allowed = (GroupStatus.WAITING, GroupStatus.RUNNING, GroupStatus.FAILED)
        if group.status not in allowed:
            raise ActionRefused(f"group is {group.status}; pause needs one of {', '.join(sorted(allowed))}")
        held = 0
        if not preview:
            Group.objects.filter(pk=group_id).update(status=GroupStatus.PAUSED)
            if group.status == GroupStatus.RUNNING:
                held = _group_workflow_pause(group, actor)
        return ActionOutcome(
            "pause", "group", group_id, preview, f"{group.status} -> paused", {"held_jobs": held}
        )

    return action_run("pause", "group", group_id, actor, {}, preview, body)


def _group_workflow_pause(group: Group, actor: str) -> int:
    workflow_id = _current_workflow_id(group)
    if Workflow.objects.filter(pk=workflow_id, status__in=list(WORKFLOW_FINAL)).exists():
        return 0
    return workflow_pause(workflow_id=workflow_id, actor=actor)["held"]


def group_resume(*, group_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Back to waiting (never submitted) or running (the advancer then judges its attempt); the
    attempt's paused workflow runs again."""

    def body() -> ActionOutcome:
        group = Group.objects.select_for_update().get(pk=group_id)
        if group.status != GroupStatus.PAUSED:
            raise ActionRefused(f"group is {group.status}; only a paused group can be resumed")
        target = GroupStatus.WAITING if group.attempt == 0 else GroupStatus.RUNNING
        if not preview:
            Group.objects.filter(pk=group_id).update(status=target, progress_at=timezone.now(), stalled=False)
            if (
                group.attempt
                and Workflow.objects.filter(
                    pk=_current_workflow_id(group), status=WorkflowStatus.PAUSED
                ).exists()
            ):
                workflow_resume(workflow_id=_current_workflow_id(group), actor=actor)
        return ActionOutcome("resume", "group", group_id, preview, f"paused -> {target}")

    return action_run("resume", "group", group_id, actor, {}, preview, body)


# --- groups: submission and the state of an attempt chain -----------------------------------------


def _current_workflow_id(group: Group) -> int:
    return GroupAttempt.objects.values_list("workflow_id", flat=True).get(group=group, attempt=group.attempt)


def _label_settings_with_sites(config: Mapping[str, Any]) -> dict[str, LabelSettings]:
    """The task settings of the labels that carry a `sites` rule, a failure budget or learned
    requests (the others take their jobs' resources as every workflow does)."""
    settings: dict[str, LabelSettings] = {}
    for label, entry in config["labels"].items():
        sites = entry.get("sites") or {}
        rule = SiteRule.of(sites.get("include"), sites.get("exclude"))
        budget = entry.get("failure_budget")
        learn = entry.get("learn_requests")
        if rule or budget is not None or learn is not None:
            settings[label] = LabelSettings(
                memory_mb=entry["memory_mb"],
                cores=entry["cores"],
                walltime_s=entry["walltime_s"],
                disk_mb=entry["disk_mb"],
                sites=rule,
                failure_budget=budget,
                learn_requests=learn,
            )
    return settings


def group_submit(
    *, group: Group, kind: str, actor: str, overrides: Mapping[str, Any] | None = None
) -> GroupAttempt:
    """Submit the next attempt of a group as a workflow (caller holds the group's row lock)."""
    campaign = Campaign.objects.select_related("owner").get(pk=group.campaign_id)
    spec = campaign_spec(campaign)
    step_name = Step.objects.values_list("name", flat=True).get(pk=group.step_id)
    attempt = group.attempt + 1
    config = config_resolve(spec, step=step_name, overrides=overrides)
    plan = jobs_plan(config, group=group.name, data_ids=group.data_ids, attempt=attempt)
    if not plan:
        raise ActionRefused("this attempt would have no jobs")
    workflow = workflow_submit(
        owner=campaign.owner,
        name=f"{campaign.name}/{step_name}/{group.name}#{attempt}",
        jobs=[NewJob(**job) for job in plan],
        labels=_label_settings_with_sites(config),
        cluster=config.get("cluster"),
        priority=int(config["priority"]),
        spec={"campaign_id": campaign.pk, "group_id": group.pk, "attempt": attempt, "kind": kind},
    )
    Workflow.objects.filter(pk=workflow.pk).update(attempt=attempt)
    row = GroupAttempt.objects.create(
        group=group,
        attempt=attempt,
        kind=kind,
        workflow=workflow,
        campaign_version=campaign.version,
        config=config,
        overrides=dict(overrides or {}),
        created_by=actor,
    )
    now = timezone.now()
    Group.objects.filter(pk=group.pk).update(
        status=GroupStatus.RUNNING,
        attempt=attempt,
        jobs_total=len(plan),
        jobs_done=0,
        progress_at=now,
        stalled=False,
        failure_notified=False,
        eta=None,
        ended_at=None,
    )
    group.attempt = attempt
    return row


def group_chain_jobs(group: Group) -> list[dict[str, Any]]:
    """Every job of every attempt of the group, with what a selection and a template need."""
    return list(
        Job.objects.filter(workflow__campaign_attempt__group=group)
        .order_by("pandaid")
        .values(
            "pandaid",
            "name",
            "label",
            "jobstatus",
            "workflow_id",
            "data_id",
            "queue",
            "queue__site__name",
            *sorted(ERROR_FIELDS),
        )
    )


def group_unsucceeded(group: Group, jobs: list[dict[str, Any]], spec: Mapping[str, Any]) -> set[str]:
    """Job names of the group's full plan that did not finish in any attempt."""
    config = config_resolve(spec, step=Step.objects.values_list("name", flat=True).get(pk=group.step_id))
    planned = {j["name"] for j in jobs_plan(config, group=group.name, data_ids=group.data_ids, attempt=1)}
    done = {j["name"] for j in jobs if j["jobstatus"] == JobStatus.FINISHED}
    return planned - done


def _require_settled(group: Group, allowed: set[str], verb: str) -> None:
    if group.status not in allowed:
        raise ActionRefused(f"group is {group.status}; {verb} needs one of {', '.join(sorted(allowed))}")
    if (
        group.attempt
        and Job.objects.filter(workflow_id=_current_workflow_id(group), jobstatus__in=JOB_NON_FINAL).exists()
    ):
        raise ActionRefused(f"attempt {group.attempt} still has jobs in flight; wait or cancel them first")


def _lock_group(group_id: int) -> Group:
    return Group.objects.select_for_update().get(pk=group_id)


# --- recovery verbs --------------------------------------------------------------------------------


def group_restart(*, group_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Same config, same workflow: failed, cancelled and pruned jobs of the current attempt go back
    to `defined` (attemptnr + 1, errors cleared on the row; JobAttempt rows keep them) and their
    pending parents are recounted; finished jobs are never re-run.

    Precondition: the group failed and nothing of its attempt is in flight.
    """

    def body() -> ActionOutcome:
        group = _lock_group(group_id)
        _require_settled(group, {GroupStatus.FAILED}, "restart")
        workflow_id = _current_workflow_id(group)
        rows = list(
            Job.objects.filter(workflow_id=workflow_id, jobstatus__in=JOB_RESTARTABLE)
            .order_by("pandaid")
            .values_list("pandaid", "jobstatus", "attemptnr")
        )
        if not rows:
            raise ActionRefused("the current attempt has no failed, cancelled or pruned job to restart")
        counts = Counter(status for _, status, _ in rows)
        details = {"jobs": len(rows), "by_status": dict(counts), "attempt": group.attempt}
        if preview:
            return ActionOutcome(
                "restart", "group", group_id, True, f"would restart {len(rows)} jobs", details
            )
        # The dispatcher's restart: same rows back to `defined`, attempt bumped where the last one
        # was dispatched, pending parents recounted, workflow and tasks reopened.
        workflow_restart(workflow_id=workflow_id, actor=actor, jobstatus=sorted(JOB_RESTARTABLE))
        GroupAttempt.objects.filter(group=group, attempt=group.attempt).update(restarts=F("restarts") + 1)
        done = Job.objects.filter(workflow_id=workflow_id, jobstatus=JobStatus.FINISHED).count()
        Group.objects.filter(pk=group.pk).update(
            status=GroupStatus.RUNNING,
            jobs_done=done,
            progress_at=timezone.now(),
            stalled=False,
            failure_notified=False,
            ended_at=None,
        )
        return ActionOutcome("restart", "group", group_id, False, f"restarted {len(rows)} jobs", details)

    return action_run("restart", "group", group_id, actor, {}, preview, body)


def rerun_preview(group: Group, selection: Selection) -> dict[str, Any]:
    """The failed jobs a selection picks and what downstream of them would rerun.

    1. Each planned job's latest row across the attempt chain (later attempts have larger pandaids);
       the failed ones without a successful row anywhere are the candidates, so a failure left out
       of an earlier rescue can still be picked.
    2. No selection: every job without a successful output reruns. A selection picks candidates by
       error template, label, site or data-id range; their not-yet-successful descendants follow.
    """
    campaign = Campaign.objects.get(pk=group.campaign_id)
    spec = campaign_spec(campaign)
    jobs = group_chain_jobs(group)
    unsucceeded = group_unsucceeded(group, jobs, spec)
    latest = {j["name"]: j for j in jobs}  # ordered by pandaid: the last row of a name wins
    failed = [
        j for name, j in sorted(latest.items()) if name in unsucceeded and j["jobstatus"] == JobStatus.FAILED
    ]
    for j in failed:
        j["site"] = j.pop("queue__site__name")
    if selection.empty:
        picked = list(failed)
        selected = set(unsucceeded)
    step_name = Step.objects.values_list("name", flat=True).get(pk=group.step_id)
    config = config_resolve(spec, step=step_name)
    if not selection.empty:
        # data_min / data_max bound the step's first dimension.
        picked = [j for j in failed if selection.matches(j, dimension=config["dimension"])]
        selected = {j["name"] for j in picked}
    plan = jobs_plan(config, group=group.name, data_ids=group.data_ids, attempt=1)
    downstream = (downstream_of(plan, selected) & unsucceeded) - selected
    templates = Counter(error_template(j) for j in picked)
    return {
        "selected": sorted(selected),
        "downstream": sorted(downstream),
        "rerun": sorted((selected | downstream) & unsucceeded),
        "errors": dict(templates.most_common()),
        "left_failed": sorted({j["name"] for j in failed} - selected),
    }


def group_rescue(
    *,
    group_id: int,
    actor: str,
    overrides: Mapping[str, Any] | None = None,
    selection: Mapping[str, Any] | None = None,
    preview: bool = False,
) -> ActionOutcome:
    """A new attempt, with overrides, running only jobs without successful outputs.

    Without a selection: every job of the group that has not finished in any attempt. With one
    (error template, label, site, data-id range): only the selected failed jobs and what depends on
    them — the selective rerun. `overrides`: memory_mb / walltime_s / cores / disk_mb / priority for
    the selected jobs, `sites: {include, exclude}` for every rerun job (e.g. away from a broken
    site), and `labels: {label: {…}}` per label. Finished outputs are never recomputed.

    Precondition: the group failed (or was accepted with partial outputs) and nothing is in flight.
    """
    try:
        rescue_check(overrides, selection)  # every key, before anything is read or locked
    except FieldInvalid as exc:
        raise SpecInvalid(str(exc), field=exc.field) from None
    overrides = dict(overrides or {})
    sel = Selection.from_mapping(selection)
    params = {"overrides": overrides, "selection": sel.as_dict()}

    def body() -> ActionOutcome:
        group = _lock_group(group_id)
        _require_settled(group, {GroupStatus.FAILED, GroupStatus.ACCEPTED}, "rescue")
        if group.attempt == 0:
            raise ActionRefused("the group was never submitted; nothing to rescue")
        step_status = Step.objects.values_list("status", flat=True).get(pk=group.step_id)
        if step_status in (StepStatus.DONE, StepStatus.FAILED):
            raise ActionRefused(f"the group's step is {step_status}; rescue it before the step ends")
        unknown = set(overrides) - {
            "memory_mb",
            "walltime_s",
            "cores",
            "disk_mb",
            "priority",
            "labels",
            "sites",
        }
        if unknown:
            raise ActionRefused(f"rescue overrides do not take {', '.join(sorted(unknown))}")
        if overrides.get("sites") is not None:
            sites_parse(overrides["sites"], "overrides.sites")  # SpecInvalid (400) before any preview
        preview_data = rerun_preview(group, sel)
        if not preview_data["rerun"]:
            raise ActionRefused("no job matches: nothing to rerun")
        details = {**preview_data, "attempt": group.attempt + 1}
        if preview:
            return ActionOutcome(
                "rescue", "group", group_id, True, f"would rerun {len(preview_data['rerun'])} jobs", details
            )
        per_job = {k: v for k, v in overrides.items() if k not in ("labels", "sites")}
        attempt_overrides: dict[str, Any] = {
            "only": preview_data["rerun"],
            "labels": overrides.get("labels", {}),
            "jobs": dict.fromkeys(preview_data["selected"], per_job) if per_job else {},
        }
        if overrides.get("sites") is not None:
            attempt_overrides["sites"] = overrides["sites"]
        row = group_submit(group=group, kind=AttemptKind.RESCUE, actor=actor, overrides=attempt_overrides)
        return ActionOutcome(
            "rescue",
            "group",
            group_id,
            False,
            f"attempt {row.attempt}: rerunning {len(preview_data['rerun'])} jobs",
            details,
        )

    return action_run("rescue", "group", group_id, actor, params, preview, body)


def group_retry(*, group_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """A fresh attempt of the whole group under the campaign's current spec version.

    Precondition: the group failed or was rejected, and nothing is in flight.
    """

    def body() -> ActionOutcome:
        group = _lock_group(group_id)
        _require_settled(group, {GroupStatus.FAILED, GroupStatus.REJECTED}, "retry")
        step = Step.objects.get(pk=group.step_id)
        reopen = step.status == StepStatus.FAILED and group.status == GroupStatus.REJECTED
        details = {"attempt": group.attempt + 1, "reopens_step": reopen}
        if preview:
            return ActionOutcome(
                "retry", "group", group_id, True, f"would submit attempt {group.attempt + 1}", details
            )
        if reopen:
            # The step failed because of this rejected group: retrying it reopens step and campaign.
            Step.objects.filter(pk=step.pk).update(status=StepStatus.RUNNING, ended_at=None)
            Campaign.objects.filter(pk=group.campaign_id, status=CampaignStatus.FAILED).update(
                status=CampaignStatus.RUNNING, ended_at=None
            )
        row = group_submit(group=group, kind=AttemptKind.RETRY, actor=actor)
        details["jobs"] = Job.objects.filter(workflow_id=row.workflow_id).count()
        return ActionOutcome("retry", "group", group_id, False, f"attempt {row.attempt} submitted", details)

    return action_run("retry", "group", group_id, actor, {}, preview, body)


def group_accept(*, group_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Accept the group as it stands, partial outputs allowed. Precondition: failed, settled."""

    def body() -> ActionOutcome:
        group = _lock_group(group_id)
        _require_settled(group, {GroupStatus.FAILED}, "accept")
        campaign = Campaign.objects.get(pk=group.campaign_id)
        missing = sorted(group_unsucceeded(group, group_chain_jobs(group), campaign_spec(campaign)))
        details = {"missing_outputs": len(missing), "missing": missing[:100]}
        if not preview:
            Group.objects.filter(pk=group.pk).update(status=GroupStatus.ACCEPTED, ended_at=timezone.now())
        return ActionOutcome(
            "accept",
            "group",
            group_id,
            preview,
            f"accepted with {len(missing)} jobs without outputs",
            details,
        )

    return action_run("accept", "group", group_id, actor, {}, preview, body)


def group_reject(*, group_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Reject the group's outputs: its step ends failed unless the group is retried.
    Precondition: failed or accepted, settled, and its step not already finished."""

    def body() -> ActionOutcome:
        group = _lock_group(group_id)
        _require_settled(group, {GroupStatus.FAILED, GroupStatus.ACCEPTED}, "reject")
        step_status = Step.objects.values_list("status", flat=True).get(pk=group.step_id)
        if step_status in (StepStatus.DONE, StepStatus.FAILED):
            raise ActionRefused(f"the group's step is {step_status}; its groups can no longer be rejected")
        if not preview:
            Group.objects.filter(pk=group.pk).update(status=GroupStatus.REJECTED, ended_at=timezone.now())
        return ActionOutcome("reject", "group", group_id, preview, f"{group.status} -> rejected")

    return action_run("reject", "group", group_id, actor, {}, preview, body)
