"""Tasks, jobs, attempts and payload logs over REST (reads only; the writes are workflow actions)."""

from __future__ import annotations

from typing import Any, cast

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from dispatcher import access
from dispatcher.api.base import ApiError, BaseApi, Filter, FilteredListApi, documented_filters
from dispatcher.models import ArchivedJob, ArchivedJobAttempt, Job, JobAttempt, PayloadLog, Task
from dispatcher.queries import task_state_counts
from dispatcher.serializers import JobAttemptSerializer, JobDetailSerializer, JobSerializer, TaskSerializer


@documented_filters
class TaskListApi(FilteredListApi):
    serializer_class = TaskSerializer
    time_field = "modified_at"
    filters = {
        "jeditaskid": Filter("jeditaskid", int),
        "workflow": Filter("workflow_id", int),
        "label": Filter("label"),
        "status": Filter("status"),
        "username": Filter("username"),
        "produsername": Filter("username"),
        "name": Filter("name"),
    }

    def base_queryset(self) -> QuerySet[Any]:
        return Task.objects.all()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        items = list(self.paginate_queryset(self.get_queryset()) or [])
        counts = task_state_counts([t.jeditaskid for t in items])
        return self.get_paginated_response(TaskSerializer(items, many=True, context={"counts": counts}).data)


class TaskDetailApi(BaseApi):
    @extend_schema(responses=TaskSerializer)
    def get(self, request: Request, jeditaskid: int) -> Response:
        task = access.task_get_for_user(request.user, jeditaskid, token=self.token())
        counts = task_state_counts([task.jeditaskid])
        return Response(TaskSerializer(task, context={"counts": counts}).data)


_JOB_FILTERS = {
    "pandaid": Filter("pandaid", int),
    "jeditaskid": Filter("task_id", int),
    "workflow": Filter("workflow_id", int),
    "jobstatus": Filter("jobstatus"),
    "computingsite": Filter("queue_id", like_lookup="queue__name"),
    "produsername": Filter("produsername"),
    "label": Filter("label"),
    "name": Filter("name"),
    "prodsourcelabel": Filter("prodsourcelabel"),
    "attemptnr": Filter("attemptnr", int),
}


@documented_filters
class JobListApi(FilteredListApi):
    serializer_class = JobSerializer
    time_field = "statechangetime"
    filters = _JOB_FILTERS
    archive_model = ArchivedJob

    def base_queryset(self) -> QuerySet[Any]:
        return Job.objects.all()


class JobDetailApi(BaseApi):
    @extend_schema(responses=JobDetailSerializer)
    def get(self, request: Request, pandaid: int) -> Response:
        job = access.job_get_for_user(request.user, pandaid, token=self.token())
        # An archived job has the live job's columns (JobColumns) and relation names.
        return Response(JobDetailSerializer(cast(Job, job)).data)


class JobAttemptListApi(BaseApi):
    @extend_schema(responses=JobAttemptSerializer(many=True), summary="Every finished attempt of one job")
    def get(self, request: Request, pandaid: int) -> Response:
        job = access.job_get_for_user(request.user, pandaid, token=self.token())
        attempts = cast(QuerySet[JobAttempt], job.attempts.order_by("attemptnr"))  # archived: same columns
        return Response(JobAttemptSerializer(attempts, many=True).data)


class JobLogApi(BaseApi):
    @extend_schema(
        parameters=[OpenApiParameter("attemptnr", int, description="Default: the job's current attempt.")],
        responses=inline_serializer(
            "JobLog",
            {
                "pandaid": serializers.IntegerField(),
                "attemptnr": serializers.IntegerField(),
                "text": serializers.CharField(),
            },
        ),
        summary="The payload output of one attempt",
    )
    def get(self, request: Request, pandaid: int) -> Response:
        job = access.job_get_for_user(request.user, pandaid, token=self.token())
        raw = request.query_params.get("attemptnr") or str(job.attemptnr)
        if not raw.isdigit():
            raise ApiError("attemptnr must be an integer", field="attemptnr")
        chunks = PayloadLog.objects.filter(job_id=job.pandaid, attemptnr=int(raw)).order_by("sequence")
        text = "".join(chunks.values_list("text", flat=True))
        return Response({"pandaid": job.pandaid, "attemptnr": int(raw), "text": text})


@documented_filters
class AttemptListApi(FilteredListApi):
    serializer_class = JobAttemptSerializer
    time_field = "endtime"
    archive_model = ArchivedJobAttempt
    filters = {
        "pandaid": Filter("job_id", int),
        "jobstatus": Filter("jobstatus"),
        "computingsite": Filter("queue"),
        "attemptnr": Filter("attemptnr", int),
        "jeditaskid": Filter("job__task_id", int),
        "workflow": Filter("job__workflow_id", int),
    }

    def base_queryset(self) -> QuerySet[Any]:
        return JobAttempt.objects.all()
