"""REST API serializers: read shapes of the dispatcher's objects and the inputs of the actions.

Field names follow the monitor (PanDA's `pandaid`, `jeditaskid`, `jobstatus`, `computingsite`,
`produsername`), so a URL filter and the JSON it returns speak the same words.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from dispatcher.models import Job, JobAttempt, Queue, Site, Task, Workflow
from dispatcher.states import JobStatus


class WorkflowSerializer(serializers.ModelSerializer[Workflow]):
    produsername = serializers.CharField(source="owner.username", read_only=True)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "produsername",
            "status",
            "priority",
            "attempt",
            "final_jobs",
            "created_at",
            "modified_at",
            "ended_at",
            "counts",
        ]

    def get_counts(self, workflow: Workflow) -> dict[str, int]:
        counts: dict[int, dict[str, int]] = self.context.get("counts", {})
        return counts.get(workflow.pk, {})


class TaskSerializer(serializers.ModelSerializer[Task]):
    workflow = serializers.IntegerField(source="workflow_id", read_only=True)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "jeditaskid",
            "workflow",
            "label",
            "chunk",
            "name",
            "status",
            "username",
            "priority",
            "max_attempts",
            "memory_mb",
            "max_memory_mb",
            "cores",
            "walltime_s",
            "disk_mb",
            "included_sites",
            "excluded_sites",
            "failure_budget",
            "budget_since",
            "pause_reason",
            "paused_at",
            "learn_requests",
            "learned",
            "created_at",
            "modified_at",
            "ended_at",
            "counts",
        ]

    def get_counts(self, task: Task) -> dict[str, int]:
        counts: dict[int, dict[str, int]] = self.context.get("counts", {})
        return counts.get(task.jeditaskid, {})


_JOB_LIST_FIELDS = [
    "pandaid",
    "jeditaskid",
    "workflow",
    "name",
    "label",
    "data_id",
    "jobstatus",
    "attemptnr",
    "currentpriority",
    "pending_parents",
    "is_final",
    "computingsite",
    "produsername",
    "prodsourcelabel",
    "request_memory_mb",
    "request_cores",
    "request_walltime_s",
    "request_disk_mb",
    "max_rss_kb",
    "request_reason",
    "piloterrorcode",
    "piloterrordiag",
    "exeerrorcode",
    "exeerrordiag",
    "transexitcode",
    "creationtime",
    "statechangetime",
    "starttime",
    "endtime",
]


class JobSerializer(serializers.ModelSerializer[Job]):
    jeditaskid = serializers.IntegerField(source="task_id", read_only=True)
    workflow = serializers.IntegerField(source="workflow_id", read_only=True)
    computingsite = serializers.CharField(source="queue_id", read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = _JOB_LIST_FIELDS


class JobDetailSerializer(JobSerializer):
    parents = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            *_JOB_LIST_FIELDS,
            "command",
            "environment",
            "container_image",
            "transformation",
            "resource_type",
            "pilot_id",
            "node",
            "cpu_time_s",
            "max_pss_kb",
            "ddmerrorcode",
            "ddmerrordiag",
            "jobdispatchererrorcode",
            "jobdispatchererrordiag",
            "superrorcode",
            "superrordiag",
            "taskbuffererrorcode",
            "taskbuffererrordiag",
            "brokerageerrorcode",
            "brokerageerrordiag",
            "dispatched_at",
            "heartbeat_at",
            "parents",
        ]

    def get_parents(self, job: Job) -> list[int]:
        return list(job.parent_edges.values_list("parent_id", flat=True))


class JobAttemptSerializer(serializers.ModelSerializer[JobAttempt]):
    pandaid = serializers.IntegerField(source="job_id", read_only=True)
    computingsite = serializers.CharField(source="queue", read_only=True)

    class Meta:
        model = JobAttempt
        fields = [
            "id",
            "pandaid",
            "attemptnr",
            "jobstatus",
            "computingsite",
            "node",
            "request_memory_mb",
            "request_cores",
            "cpu_time_s",
            "max_rss_kb",
            "walltime_s",
            "piloterrorcode",
            "piloterrordiag",
            "exeerrorcode",
            "exeerrordiag",
            "transexitcode",
            "ddmerrorcode",
            "ddmerrordiag",
            "jobdispatchererrorcode",
            "jobdispatchererrordiag",
            "superrorcode",
            "superrordiag",
            "taskbuffererrorcode",
            "taskbuffererrordiag",
            "retry_action",
            "retry_reason",
            "dispatched_at",
            "starttime",
            "endtime",
        ]


class SiteSerializer(serializers.ModelSerializer[Site]):
    queues: serializers.RelatedField[Any, Any, Any] = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field="name"
    )

    class Meta:
        model = Site
        fields = ["name", "region", "tier", "description", "queues"]


class QueueSerializer(serializers.ModelSerializer[Queue]):
    site = serializers.CharField(source="site.name", read_only=True)
    resource_types: serializers.RelatedField[Any, Any, Any] = serializers.SlugRelatedField(
        many=True, read_only=True, slug_field="name"
    )

    class Meta:
        model = Queue
        fields = [
            "name",
            "site",
            "status",
            "min_rss_mb",
            "max_rss_mb",
            "max_walltime_s",
            "max_cores",
            "max_disk_mb",
            "resource_types",
            "plugin",
            "pilot_flavour",
            "require_lease",
            "max_workers",
            "max_queued_workers",
            "description",
        ]


# --- action inputs -----------------------------------------------------------------------------


class SelectionSerializer(serializers.Serializer[dict[str, Any]]):
    """Which jobs of the workflow an action applies to; both empty means all of them."""

    labels = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=1000, allow_empty=True
    )
    pandaids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=200_000, allow_empty=True
    )
    jobstatus = serializers.ListField(
        child=serializers.ChoiceField(choices=JobStatus.values),
        required=False,
        max_length=20,
        allow_empty=True,
    )


class LabelSelectionSerializer(serializers.Serializer[dict[str, Any]]):
    """Which tasks of the workflow an action applies to, by label; empty means all of them."""

    labels = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=1000, allow_empty=True
    )


class BoostPrioritySerializer(serializers.Serializer[dict[str, Any]]):
    priority = serializers.IntegerField(required=False, min_value=-100_000, max_value=100_000)
    delta = serializers.IntegerField(required=False, min_value=-100_000, max_value=100_000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("priority" in attrs) == ("delta" in attrs):
            raise serializers.ValidationError({"priority": "give either priority or delta"})
        return attrs


class SetMemorySerializer(SelectionSerializer):
    memory_mb = serializers.IntegerField(min_value=1, max_value=10_000_000)
