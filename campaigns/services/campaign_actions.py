"""Verbs on a campaign and its steps: create, edit, launch, pause and resume; a step's pause,
resume and release (of a breakpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from campaigns.dry_run import campaign_dry_run
from campaigns.models import (
    ActionLog,
    ActionResult,
    Campaign,
    CampaignStatus,
    CampaignVersion,
    Group,
    Step,
    StepStatus,
)
from campaigns.services.actions import ActionOutcome, ActionRefused, action_run
from campaigns.spec import SpecInvalid, spec_parse


@transaction.atomic
def campaign_create(*, owner: User, spec_yaml: str, comment: str = "") -> Campaign:
    """A draft campaign with version 1 of its spec. Raises SpecInvalid naming the field."""
    spec = spec_parse(spec_yaml)
    if Campaign.objects.filter(name=spec["name"]).exists():
        raise SpecInvalid(f"a campaign named {spec['name']!r} exists already")
    campaign = Campaign.objects.create(name=spec["name"], owner=owner)
    actor = owner.get_username()
    CampaignVersion.objects.create(
        campaign=campaign, version=1, spec_yaml=spec_yaml, spec=spec, created_by=actor, comment=comment
    )
    ActionLog.objects.create(
        campaign=campaign,
        actor=actor,
        verb="create",
        object_type="campaign",
        object_id=campaign.pk,
        params={"version": 1},
        result=ActionResult.OK,
        message=f"created {campaign.name} v1",
    )
    return campaign


def campaign_spec(campaign: Campaign) -> dict[str, Any]:
    spec: dict[str, Any] = CampaignVersion.objects.values_list("spec", flat=True).get(
        campaign=campaign, version=campaign.version
    )
    return spec


class SpecOutdated(SpecInvalid):
    """The campaign's stored spec does not pass today's checks (it was stored before they
    existed): 409, naming the field; `campaign edit` with a fixed spec resolves it."""

    status_code = 409


def campaign_spec_checked(campaign: Campaign) -> dict[str, Any]:
    """The current version's spec, parsed and checked again from its YAML as written, so a
    dry run or launch of a spec stored before a check existed answers 409 naming the field
    instead of failing half-way."""
    spec_yaml = CampaignVersion.objects.values_list("spec_yaml", flat=True).get(
        campaign=campaign, version=campaign.version
    )
    try:
        return spec_parse(spec_yaml)
    except SpecInvalid as exc:
        raise SpecOutdated(
            f"version {campaign.version} of the spec no longer passes its checks; edit it: {exc}",
            field=exc.field,
        ) from None


def campaign_edit(*, campaign_id: int, actor: str, spec_yaml: str, comment: str = "") -> ActionOutcome:
    """A new version of the spec. Allowed while draft or paused; after launch the steps and groups
    stay as split, and the new version applies to later attempts (retry, rescue)."""

    def body() -> ActionOutcome:
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
            raise ActionRefused(f"campaign is {campaign.status}; pause it before editing its spec")
        spec = spec_parse(spec_yaml)
        old = campaign_spec(campaign)
        if spec["name"] != campaign.name:
            raise ActionRefused(
                f"the spec's name {spec['name']!r} differs from the campaign's {campaign.name!r}"
            )
        if campaign.status != CampaignStatus.DRAFT and [s["name"] for s in spec["steps"]] != [
            s["name"] for s in old["steps"]
        ]:
            raise ActionRefused(
                "a launched campaign keeps its steps; change labels, overrides or resources only"
            )
        version = campaign.version + 1
        CampaignVersion.objects.create(
            campaign=campaign,
            version=version,
            spec_yaml=spec_yaml,
            spec=spec,
            created_by=actor,
            comment=comment,
        )
        Campaign.objects.filter(pk=campaign.pk).update(version=version, modified_at=timezone.now())
        return ActionOutcome(
            "edit", "campaign", campaign_id, False, f"version {version}", {"version": version}
        )

    return action_run("edit", "campaign", campaign_id, actor, {"comment": comment}, False, body)


def campaign_launch(*, campaign_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Split every step into groups and start the campaign; the advancer submits the first step.
    Refused when the dry run reports errors. The preview is the dry run."""

    def body() -> ActionOutcome:
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.status != CampaignStatus.DRAFT:
            raise ActionRefused(f"campaign is {campaign.status}, only a draft can be launched")
        spec = campaign_spec_checked(campaign)
        dry = campaign_dry_run(spec, campaign_id=campaign.pk)
        if dry.errors:
            raise ActionRefused("dry run failed: " + "; ".join(dry.errors))
        if preview:
            return ActionOutcome("launch", "campaign", campaign_id, True, "dry run", dry.as_dict())
        groups = 0
        for position, step_spec in enumerate(spec["steps"]):
            step = Step.objects.create(
                campaign=campaign,
                name=step_spec["name"],
                position=position,
                breakpoint=step_spec["breakpoint"],
                split_rule=step_spec["split"],
                max_running_groups=step_spec["max_running_groups"],
            )
            sg = dry.planned[step_spec["name"]]  # the dry run's plan: the same spec, read once
            plans = sg.plans
            # Every group counts its planned jobs from the launch, so a step's and the campaign's
            # progress are over all their work before later steps are submitted.
            jobs_of = dry.group_jobs[step_spec["name"]]
            Group.objects.bulk_create(
                [
                    Group(
                        step=step,
                        campaign=campaign,
                        name=p.name,
                        position=i,
                        data_ids=p.data_ids,
                        upstream=sg.upstream.get(p.name, []),
                        jobs_total=jobs_of[p.name],
                    )
                    for i, p in enumerate(plans)
                ],
                batch_size=1000,
            )
            groups += len(plans)
        Campaign.objects.filter(pk=campaign.pk).update(
            status=CampaignStatus.RUNNING, launched_at=timezone.now()
        )
        return ActionOutcome(
            "launch",
            "campaign",
            campaign_id,
            False,
            f"launched: {len(spec['steps'])} steps, {groups} groups",
            {"dry_run": dry.as_dict()},
        )

    return action_run("launch", "campaign", campaign_id, actor, {}, preview, body)


def _set_status(
    model: type[Campaign] | type[Step] | type[Group],
    object_type: str,
    verb: str,
    object_id: int,
    actor: str,
    allowed: Mapping[str, str],
    preview: bool,
) -> ActionOutcome:
    """Pause/resume-style verbs: a conditional UPDATE from one of `allowed`'s keys to its value."""

    def body() -> ActionOutcome:
        current = model.objects.select_for_update().values_list("status", flat=True).get(pk=object_id)
        if current not in allowed:
            raise ActionRefused(
                f"{object_type} is {current}; {verb} needs one of {', '.join(sorted(allowed))}"
            )
        target = allowed[current]
        if not preview:
            model.objects.filter(pk=object_id, status=current).update(status=target)
        return ActionOutcome(verb, object_type, object_id, preview, f"{current} -> {target}")

    return action_run(verb, object_type, object_id, actor, {}, preview, body)


def campaign_pause(*, campaign_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """The advancer leaves a paused campaign alone: no submission, no step change."""
    return _set_status(Campaign, "campaign", "pause", campaign_id, actor, {"running": "paused"}, preview)


def campaign_resume(*, campaign_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    return _set_status(Campaign, "campaign", "resume", campaign_id, actor, {"paused": "running"}, preview)


def step_pause(*, step_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """No new group of a paused step is submitted; groups in flight finish."""
    allowed = {"waiting": "paused", "running": "paused", "blocked": "paused"}
    return _set_status(Step, "step", "pause", step_id, actor, allowed, preview)


def step_resume(*, step_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Back to waiting: the advancer restarts it when it is the campaign's current step."""
    return _set_status(Step, "step", "resume", step_id, actor, {"paused": "waiting"}, preview)


def step_release(*, step_id: int, actor: str, preview: bool = False) -> ActionOutcome:
    """Open a breakpoint: the blocked step starts."""

    def body() -> ActionOutcome:
        step = Step.objects.select_for_update().get(pk=step_id)
        if step.status != StepStatus.BLOCKED:
            raise ActionRefused(f"step is {step.status}; only a blocked (breakpoint) step can be released")
        if not preview:
            Step.objects.filter(pk=step_id).update(status=StepStatus.RUNNING, started_at=timezone.now())
        return ActionOutcome("release", "step", step_id, preview, "breakpoint released")

    return action_run("release", "step", step_id, actor, {}, preview, body)
