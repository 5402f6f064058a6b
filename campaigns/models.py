"""Campaign → Step → Group → GroupAttempt, and the ActionLog of operator actions (docs/architecture.md#entities-and-states).

A campaign's spec is versioned: every edit is a new CampaignVersion, and each group attempt keeps
the resolved config it ran with, so attempts are rows, never mutations. Writes go through
`campaigns.services`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "draft"  # created, not launched
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    DONE = "done", "done"  # every step done
    FAILED = "failed", "failed"  # a step ended with rejected groups
    REJECTED = "rejected", "rejected"  # an operator gave the whole campaign up


CAMPAIGN_FINAL = frozenset({CampaignStatus.DONE, CampaignStatus.FAILED, CampaignStatus.REJECTED})


class StepStatus(models.TextChoices):
    WAITING = "waiting", "waiting"  # an earlier step is not done yet
    BLOCKED = "blocked", "blocked (breakpoint: waits for an operator)"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    DONE = "done", "done"  # every group accepted
    FAILED = "failed", "failed"  # every group final, some rejected


STEP_FINAL = frozenset({StepStatus.DONE, StepStatus.FAILED})


class GroupStatus(models.TextChoices):
    WAITING = "waiting", "waiting"  # not submitted yet
    RUNNING = "running", "running"  # its current attempt has jobs in flight
    PAUSED = "paused", "paused"
    FAILED = "failed", "failed (reviewable: restart, rescue, retry, accept or reject)"
    ACCEPTED = "accepted", "accepted"
    REJECTED = "rejected", "rejected"


GROUP_FINAL = frozenset({GroupStatus.ACCEPTED, GroupStatus.REJECTED})


class AttemptKind(models.TextChoices):
    SUBMIT = "submit", "submit (first attempt)"
    RETRY = "retry", "retry (fresh attempt, every job)"
    RESCUE = "rescue", "rescue (jobs without successful outputs, with overrides)"


class ActionResult(models.TextChoices):
    OK = "ok", "ok"
    REFUSED = "refused", "refused (a precondition failed)"


class Campaign(models.Model):
    name = models.CharField(max_length=100, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="campaigns")
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    version = models.PositiveIntegerField(default=1, help_text="The CampaignVersion in force.")
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=CampaignStatus.values), name="campaign_status_valid"
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="campaign_version_positive"),
        ]
        indexes = [
            # /campaigns/ by state, and the advancer's scan of running campaigns.
            models.Index(fields=["status", "-id"], name="campaign_status_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class CampaignVersion(models.Model):
    """One edit of a campaign's spec: the YAML as written and the parsed form."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    spec_yaml = models.TextField()
    spec = models.JSONField(help_text="The parsed, validated spec.")
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    comment = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["campaign", "version"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "version"], name="campaignversion_unique"),
            models.CheckConstraint(condition=Q(version__gte=1), name="campaignversion_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} v{self.version}"


class Step(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField(help_text="Order within the campaign, from 0.")
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.WAITING)
    breakpoint = models.BooleanField(default=False, help_text="Wait for an operator before starting.")
    split_rule = models.JSONField(default=dict, blank=True)
    max_running_groups = models.PositiveIntegerField(
        default=0, help_text="Throttle: most groups running at once; 0 means no limit."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=StepStatus.values), name="step_status_valid"),
            models.UniqueConstraint(fields=["campaign", "name"], name="step_unique_name"),
            models.UniqueConstraint(fields=["campaign", "position"], name="step_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.name}"


class Group(models.Model):
    """One chunk of a step's data. Its workflows are its attempts (GroupAttempt)."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="groups")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="groups")
    name = models.CharField(max_length=120)
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=GroupStatus.choices, default=GroupStatus.WAITING)
    data_ids = models.JSONField(
        help_text="The data ids of this chunk, sorted: values, or lists in the step's dimension order."
    )
    upstream = models.JSONField(
        default=list,
        blank=True,
        help_text="With the step's `gather`: names of the groups of the gathered step this one needs.",
    )
    attempt = models.PositiveIntegerField(default=0, help_text="Current attempt number; 0: never submitted.")
    jobs_total = models.PositiveIntegerField(default=0)
    jobs_done = models.PositiveIntegerField(default=0, help_text="Jobs finished in the current attempt.")
    progress_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time jobs_done moved (a job of the attempt finished)."
    )
    activity_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last progress signal of the attempt: a job changed state, or heartbeated with CPU "
        "progress. A group is stalled when none came for longer than its running labels' expected runtime.",
    )
    cpu_seen_s = models.FloatField(
        default=0.0, help_text="CPU seconds the attempt's jobs in flight reported at the last round."
    )
    stalled = models.BooleanField(default=False)
    stall_basis = models.CharField(
        max_length=300, blank=True, default="", help_text="Why the group is (or is not yet) stalled."
    )
    failure_notified = models.BooleanField(default=False)
    eta = models.DateTimeField(null=True, blank=True)
    eta_basis = models.CharField(
        max_length=300, blank=True, default="", help_text="What the ETA is computed from."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step", "position"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=GroupStatus.values), name="group_status_valid"),
            models.CheckConstraint(condition=Q(jobs_done__lte=F("jobs_total")), name="group_done_le_total"),
            models.UniqueConstraint(fields=["step", "name"], name="group_unique_name"),
        ]
        indexes = [
            # The advancer: running groups of a step, and the step's per-state group counts.
            models.Index(fields=["step", "status"], name="group_step_status_idx"),
            # The campaign page's counts by state.
            models.Index(fields=["campaign", "status"], name="group_campaign_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.step_id}/{self.name}"


class GroupAttempt(models.Model):
    """One workflow run for a group, with the resolved config it ran with."""

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="attempts")
    attempt = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=AttemptKind.choices)
    workflow = models.OneToOneField(
        "dispatcher.Workflow", on_delete=models.PROTECT, related_name="campaign_attempt"
    )
    campaign_version = models.PositiveIntegerField()
    config = models.JSONField(help_text="Resolved config: pipeline after step, label and attempt overrides.")
    overrides = models.JSONField(default=dict, blank=True, help_text="What this attempt changed.")
    restarts = models.PositiveIntegerField(default=0, help_text="In-place restarts of this workflow.")
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["group", "attempt"], name="groupattempt_unique"),
            models.CheckConstraint(condition=Q(attempt__gte=1), name="groupattempt_positive"),
            models.CheckConstraint(condition=Q(kind__in=AttemptKind.values), name="groupattempt_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.group_id}#{self.attempt} ({self.kind})"


class ActionLog(models.Model):
    """Who did what to which object, when, with what result. Refusals are logged too."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="actions")
    actor = models.CharField(max_length=150)
    verb = models.CharField(max_length=32)
    object_type = models.CharField(max_length=16)  # campaign | step | group
    object_id = models.BigIntegerField()
    params = models.JSONField(default=dict, blank=True)
    result = models.CharField(max_length=16, choices=ActionResult.choices)
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(result__in=ActionResult.values), name="actionlog_result_valid"
            ),
            models.CheckConstraint(
                condition=Q(object_type__in=["campaign", "step", "group"]), name="actionlog_object_type_valid"
            ),
        ]
        indexes = [
            # The campaign page's audit log, newest first.
            models.Index(fields=["campaign", "-id"], name="actionlog_campaign_idx"),
            # The group page's history.
            models.Index(fields=["object_type", "object_id"], name="actionlog_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.verb} {self.object_type}:{self.object_id} {self.result}"
