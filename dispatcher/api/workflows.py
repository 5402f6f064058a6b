"""Workflows over REST: submit a spec, list, detail, the spec as submitted, the per-label report."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from dispatcher import access
from dispatcher.api.base import ApiError, BaseApi, Filter, FilteredListApi, documented_filters
from dispatcher.models import Task, Workflow
from dispatcher.queries import task_state_counts, workflow_label_report, workflows_state_counts
from dispatcher.serializers import TaskSerializer, WorkflowSerializer
from dispatcher.services import workflow_spec_explicit, workflow_submit_spec
from dispatcher.states import JobStatus
from dispatcher.workflows import spec_load

_SUBMIT_SCHEMA = extend_schema(
    summary="Submit a workflow spec (YAML or JSON body)",
    request={"application/yaml": OpenApiTypes.STR, "application/json": OpenApiTypes.OBJECT},
    parameters=[OpenApiParameter("name", str, description="Overrides the spec's name.")],
    responses={201: WorkflowSerializer},
)


class WorkflowSubmitMixin(BaseApi):
    """POST a spec: the body is read raw and bounded, so an oversized one is refused (413) before
    it is read, and a malformed one is answered with its line and column."""

    def submit(self, request: Request) -> Response:
        access.submit_required(request.user, self.token())
        if not isinstance(request.user, User):
            raise PermissionDenied("submitting needs a user account")
        limit = int(settings.AILURO.get("MAX_SPEC_BYTES", settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(
                f"the spec is {declared} bytes; the limit is {limit} (AILURO_MAX_SPEC_BYTES)", status_code=413
            )
        raw = request._request.read(limit + 1)
        max_depth = int(settings.AILURO.get("MAX_JSON_DEPTH", 32))
        spec = spec_load(raw, content_type=request.content_type or "", max_bytes=limit, max_depth=max_depth)
        name = request.query_params.get("name") or None
        workflow = workflow_submit_spec(owner=request.user, spec=spec, name=name)
        counts = workflows_state_counts([workflow.pk])
        body = WorkflowSerializer(workflow, context={"counts": counts}).data
        return Response(body, status=status.HTTP_201_CREATED)


@documented_filters
class WorkflowListApi(WorkflowSubmitMixin, FilteredListApi):
    """GET: workflows, newest first. POST: submit a spec (same as /workflows/submit/)."""

    serializer_class = WorkflowSerializer
    parser_classes: list[Any] = []
    time_field = "created_at"
    filters = {
        "id": Filter("id", int),
        "name": Filter("name"),
        "status": Filter("status"),
        "produsername": Filter("owner__username"),
    }

    def base_queryset(self) -> QuerySet[Any]:
        return Workflow.objects.select_related("owner")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        items = list(page or [])
        counts = workflows_state_counts([wf.pk for wf in items])
        data = WorkflowSerializer(items, many=True, context={"counts": counts}).data
        return self.get_paginated_response(data)

    @_SUBMIT_SCHEMA
    def post(self, request: Request) -> Response:
        return self.submit(request)


class WorkflowSubmitApi(WorkflowSubmitMixin):
    parser_classes: list[Any] = []

    @_SUBMIT_SCHEMA
    def post(self, request: Request) -> Response:
        return self.submit(request)


class WorkflowDetailApi(BaseApi):
    @extend_schema(responses=WorkflowSerializer)
    def get(self, request: Request, workflow_id: int) -> Response:
        workflow = access.workflow_get_for_user(request.user, workflow_id, token=self.token())
        data = dict(
            WorkflowSerializer(workflow, context={"counts": workflows_state_counts([workflow.pk])}).data
        )
        tasks = list(Task.objects.filter(workflow=workflow).order_by("jeditaskid"))
        counts = task_state_counts([t.jeditaskid for t in tasks])
        data["tasks"] = TaskSerializer(tasks, many=True, context={"counts": counts}).data
        return Response(data)


class WorkflowSpecApi(BaseApi):
    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The spec as submitted")
    def get(self, request: Request, workflow_id: int) -> Response:
        workflow = access.workflow_get_for_user(request.user, workflow_id, token=self.token())
        return Response(workflow_spec_explicit(workflow))


class WorkflowReportApi(BaseApi):
    @extend_schema(
        responses=inline_serializer(
            "WorkflowReport",
            {
                "workflow": serializers.IntegerField(),
                "status": serializers.CharField(),
                "labels": serializers.ListField(child=serializers.DictField()),
                "total": serializers.DictField(),
            },
        ),
        summary="Per-label job counts by state",
    )
    def get(self, request: Request, workflow_id: int) -> Response:
        workflow = access.workflow_get_for_user(request.user, workflow_id, token=self.token())
        rows = workflow_label_report(workflow.pk)
        total: dict[str, int] = {"total": 0, **dict.fromkeys(JobStatus.values, 0)}
        for row in rows:
            for key in total:
                total[key] += row[key]
        return Response(
            {
                "workflow": workflow.pk,
                "name": workflow.name,
                "status": workflow.status,
                "labels": rows,
                "total": total,
            }
        )
