"""The shapes of the campaign API's answers (`campaigns.api`), for the OpenAPI schema: every
operation's responses are typed by these (drf-spectacular), and schemathesis holds the API to them
(tests/campaigns/test_api_schema.py). Output only: the views build plain dicts of these shapes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from campaigns.models import ActionResult, AttemptKind, CampaignStatus, GroupStatus, StepStatus


class GroupCountsSerializer(serializers.Serializer[Any]):
    total = serializers.IntegerField(allow_null=True)
    accepted = serializers.IntegerField(allow_null=True)
    running = serializers.IntegerField(allow_null=True)
    failed = serializers.IntegerField(allow_null=True)


class CampaignSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    owner = serializers.CharField()
    status = serializers.ChoiceField(choices=CampaignStatus.choices)
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    launched_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    groups = GroupCountsSerializer()


class CampaignPageSerializer(serializers.Serializer[Any]):
    next = serializers.URLField(allow_null=True, help_text="The next page (keyset cursor), or null.")
    previous = serializers.URLField(allow_null=True)
    results = CampaignSerializer(many=True)


class ProgressSerializer(serializers.Serializer[Any]):
    jobs_total = serializers.IntegerField()
    jobs_done = serializers.IntegerField()
    percent = serializers.IntegerField()
    eta = serializers.DateTimeField(allow_null=True)


class GroupSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=GroupStatus.choices)
    attempt = serializers.IntegerField()
    data_ids = serializers.IntegerField(help_text="How many data ids the group holds.")
    jobs_total = serializers.IntegerField()
    jobs_done = serializers.IntegerField()
    percent = serializers.IntegerField()
    eta = serializers.DateTimeField(allow_null=True)
    stalled = serializers.BooleanField()


class StepSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=StepStatus.choices)
    breakpoint = serializers.BooleanField()
    progress = ProgressSerializer()
    groups = GroupSerializer(many=True)


class VersionSerializer(serializers.Serializer[Any]):
    version = serializers.IntegerField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    comment = serializers.CharField(allow_blank=True)


class CampaignDetailSerializer(CampaignSerializer):
    steps = StepSerializer(many=True)
    progress = ProgressSerializer()
    versions = VersionSerializer(many=True)


class ActionEntrySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    time = serializers.DateTimeField()
    actor = serializers.CharField()
    verb = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.IntegerField()
    params = serializers.DictField()
    result = serializers.ChoiceField(choices=ActionResult.choices)
    message = serializers.CharField(allow_blank=True)


class ActionPageSerializer(serializers.Serializer[Any]):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ActionEntrySerializer(many=True)


class StepPlanSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    groups = serializers.IntegerField()
    jobs = serializers.IntegerField()
    largest_group_jobs = serializers.IntegerField()
    core_hours = serializers.FloatField()
    group_names = serializers.ListField(child=serializers.CharField(), help_text="The first 50.")


class DryRunSerializer(serializers.Serializer[Any]):
    data_ids = serializers.IntegerField()
    steps = StepPlanSerializer(many=True)
    core_hours = serializers.FloatField()
    estimated_from = serializers.DictField(child=serializers.CharField())
    # A declared field, taken off the class by the serializer metaclass: `Serializer.errors` stays.
    errors = serializers.ListField(child=serializers.CharField())  # type: ignore[assignment]
    warnings = serializers.ListField(child=serializers.CharField())


class OutcomeSerializer(serializers.Serializer[Any]):
    """What a verb did (or, with `preview`, would do); verb-specific details ride along as extra
    keys (a launch preview: the dry run; a rescue: `selected`, `rerun`, `attempt`)."""

    verb = serializers.CharField()
    object_type = serializers.ChoiceField(choices=["campaign", "step", "group"])
    object_id = serializers.IntegerField()
    preview = serializers.BooleanField()
    message = serializers.CharField(allow_blank=True)


class ConfigChangeSerializer(serializers.Serializer[Any]):
    path = serializers.CharField()
    old = serializers.JSONField(allow_null=True)
    new = serializers.JSONField(allow_null=True)


class AttemptSerializer(serializers.Serializer[Any]):
    attempt = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=AttemptKind.choices)
    workflow_id = serializers.IntegerField()
    campaign_version = serializers.IntegerField()
    restarts = serializers.IntegerField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    overrides = serializers.DictField()
    jobs = serializers.DictField(child=serializers.IntegerField(), help_text="Jobs per state.")
    config_diff = ConfigChangeSerializer(many=True)


class GroupDetailSerializer(GroupSerializer):
    step = serializers.CharField()
    attempts = AttemptSerializer(many=True)


class SpecBodySerializer(serializers.Serializer[Any]):
    spec = serializers.CharField(help_text="The campaign spec as YAML text.")
    comment = serializers.CharField(required=False, allow_blank=True, max_length=300)


class PreviewBodySerializer(serializers.Serializer[Any]):
    preview = serializers.BooleanField(required=False, default=False)


class RescueBodySerializer(PreviewBodySerializer):
    overrides = serializers.DictField(
        required=False, help_text="memory_mb, walltime_s, cores, disk_mb, priority, sites, labels"
    )
    selection = serializers.DictField(required=False, help_text="error, label, site, data_min, data_max")
