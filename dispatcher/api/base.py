"""REST API of the dispatcher (`/api/v1/`): workflows and their actions, tasks, jobs, attempts,
sites and queues.

Views are thin: parse (serializer or the bounded spec reader), call one access function, one query
or one service, answer. Lists use keyset (cursor) pagination and the monitor's filter names with
its grammar (`a|b` alternatives, `!a` negation, `*` wildcards); an unknown filter is a 400 that
names it. Errors are JSON: `{"detail": …, "field": …}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ailuro import __version__
from core.models import ApiToken
from core.roles import user_roles
from dispatcher import access
from dispatcher.models import Job, JobAttempt, PayloadLog, Queue, Site, Task, Workflow
from dispatcher.queries import task_state_counts, workflow_label_report, workflows_state_counts
from dispatcher.serializers import (
    BoostPrioritySerializer,
    JobAttemptSerializer,
    JobDetailSerializer,
    JobSerializer,
    LabelSelectionSerializer,
    QueueSerializer,
    SelectionSerializer,
    SetMemorySerializer,
    SiteSerializer,
    TaskSerializer,
    WorkflowSerializer,
)
from dispatcher.services import (
    WorkflowInvalid,
    jobs_set_memory,
    workflow_boost_priority,
    workflow_cancel,
    workflow_pause,
    workflow_restart,
    workflow_resume,
    workflow_retry,
    workflow_submit_spec,
)
from dispatcher.services.workflows import workflow_spec_explicit
from dispatcher.states import JobStatus
from dispatcher.workflows import spec_load

# --- shared machinery --------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, detail: str, *, field: str = "", status_code: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.status_code = status_code


class AnonymousReadOrAuthenticated(BasePermission):
    """Reads are open to anonymous clients when AILURO_ANONYMOUS_READ is on (the embedded run);
    everything else needs an identity. What an identity may do is `dispatcher.access`'s call."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.user and request.user.is_authenticated:
            return True
        return request.method in SAFE_METHODS and bool(settings.AILURO.get("ANONYMOUS_READ"))


class BaseApi(APIView):
    """Maps the domain's exceptions to JSON answers that name the field."""

    permission_classes = [AnonymousReadOrAuthenticated]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, WorkflowInvalid):
            return Response(exc.as_dict(), status=exc.status_code)
        if isinstance(exc, ApiError):
            body = {"detail": exc.detail, **({"field": exc.field} if exc.field else {})}
            return Response(body, status=exc.status_code)
        if isinstance(exc, Workflow.DoesNotExist):
            exc = Http404(str(exc))
        return super().handle_exception(exc)

    def token(self) -> Any:
        auth = self.request.auth
        return auth if isinstance(auth, ApiToken) or getattr(auth, "role", None) else None


class KeysetPagination(CursorPagination):
    """Keyset pagination on the primary key, newest first: page N costs what page 1 costs.

    `limit` is strict: a value that is not a whole number from 1 to 1000 is a 400 naming it, not
    silently replaced by the default (DRF's behaviour), so a client learns its mistake.
    """

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-pk"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.getlist(self.page_size_query_param)
        if not raw:
            return self.page_size
        if len(raw) > 1 or not raw[0].isdigit() or not 1 <= int(raw[0]) <= self.max_page_size:
            raise ApiError(f"limit must be a whole number from 1 to {self.max_page_size}", field="limit")
        return int(raw[0])

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return parameters


@dataclass(frozen=True)
class Filter:
    lookup: str
    kind: type = str


_RESERVED = frozenset({"cursor", "limit", "format"})


def _filter_value(name: str, raw: str, kind: type) -> Any:
    if "\x00" in raw:
        # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
        raise ApiError(f"filter {name} contains a NUL character", field=name)
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ApiError(f"filter {name} must be an integer, got {raw!r}", field=name) from None
    return raw


def apply_filters(
    queryset: QuerySet[Any], params: Mapping[str, str], filters: Mapping[str, Filter]
) -> QuerySet[Any]:
    """The monitor's grammar on indexed columns: `a|b` any of, `!a` none of, `*` wildcard."""
    for name in params:
        if name not in filters and name not in _RESERVED:
            raise ApiError(
                f"unknown filter {name!r}; this list filters on {', '.join(sorted(filters))}", field=name
            )
    for name, spec in filters.items():
        raw = params.get(name)
        if raw is None or raw == "":
            continue
        negate = raw.startswith("!")
        values = [v for v in (raw[1:] if negate else raw).split("|") if v != ""]
        condition = Q()
        for value in values:
            if "*" in value and spec.kind is str:
                pattern = "^" + ".*".join(re.escape(part) for part in value.split("*")) + "$"
                condition |= Q(**{f"{spec.lookup}__regex": pattern})
            else:
                condition |= Q(**{spec.lookup: _filter_value(name, value, spec.kind)})
        queryset = queryset.exclude(condition) if negate else queryset.filter(condition)
    return queryset


def apply_time_window(queryset: QuerySet[Any], params: Mapping[str, str], field: str) -> QuerySet[Any]:
    """The monitor's `hours=N` / `days=N`: rows whose `field` is within the last N hours / days."""
    for name, unit in (("hours", 3600), ("days", 86400)):
        raw = params.get(name)
        if raw is None or raw == "":
            continue
        try:
            amount = float(raw)
        except ValueError:
            raise ApiError(f"{name} must be a number, got {raw!r}", field=name) from None
        if not 0 < amount <= 3650 * 86400 / unit:
            raise ApiError(f"{name} must be positive and at most ten years", field=name)
        queryset = queryset.filter(**{f"{field}__gte": timezone.now() - timedelta(seconds=amount * unit)})
    return queryset


class FilteredListApi(BaseApi, ListAPIView):  # type: ignore[type-arg]
    pagination_class = KeysetPagination
    filter_backends: list[Any] = []
    filters: Mapping[str, Filter] = {}
    # The column `hours` / `days` look at; lists without one refuse those parameters.
    time_field: str | None = None

    def base_queryset(self) -> QuerySet[Any]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        access.read_required(self.request.user, self.token())
        for key, values in self.request.query_params.lists():
            if len(values) > 1:
                raise ApiError(f"give {key} once; several values are written a|b", field=key)
        params: dict[str, str] = {
            key: str(self.request.query_params.get(key, "")) for key in self.request.query_params
        }
        if self.time_field:
            queryset = apply_time_window(self.base_queryset(), params, self.time_field)
            params = {k: v for k, v in params.items() if k not in ("hours", "days")}
        else:
            queryset = self.base_queryset()
        return apply_filters(queryset, params, self.filters)


def documented_filters(cls: type[FilteredListApi]) -> type[FilteredListApi]:
    """Publish a list's filters (and `hours` / `days` where it has a time column) in the schema."""
    parameters = [
        OpenApiParameter(
            name,
            # Text filters cannot carry NUL (PostgreSQL text refuses it; the view answers 400).
            int if spec.kind is int else {"type": "string", "pattern": "^[^\\u0000]*$"},
            description="Monitor grammar: a|b any of, !a none of"
            + (", * wildcard" if spec.kind is str else "")
            + ".",
        )
        for name, spec in cls.filters.items()
    ]
    if cls.time_field:
        parameters += [
            # The bounds apply_time_window enforces, published so clients know them up front.
            OpenApiParameter(
                "hours",
                {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 3650 * 24},
                description=f"Only rows whose {cls.time_field} is in the last N hours (0 < N ≤ 87600).",
            ),
            OpenApiParameter(
                "days",
                {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 3650},
                description=f"Only rows whose {cls.time_field} is in the last N days (0 < N ≤ 3650).",
            ),
        ]
    return extend_schema_view(get=extend_schema(parameters=parameters))(cls)


# --- workflows ----------------------------------------------------------------------------------

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


def _command(
    request: Request,
    view: BaseApi,
    workflow_id: int,
    serializer_class: type[serializers.Serializer[Any]],
    run: Callable[[Workflow, dict[str, Any]], dict[str, int]],
) -> Response:
    """Shared body of the action views: access check (write), input validation, one service."""
    workflow = access.workflow_get_for_user(request.user, workflow_id, write=True, token=view.token())
    data = request.data if isinstance(request.data, dict) else {}
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        field, messages = next(iter(serializer.errors.items()))
        detail = messages[0] if isinstance(messages, list) and messages else messages
        if isinstance(detail, dict):
            detail = next(iter(detail.values()))
        raise ApiError(f"{field}: {detail}", field=str(field))
    result = run(workflow, dict(serializer.validated_data))
    return Response({"workflow": workflow.pk, **result})


_SELECTION_RESULT = inline_serializer("ActionResult", {"workflow": serializers.IntegerField()})


def _command_api(
    name: str,
    serializer_class: type[serializers.Serializer[Any]],
    service: Callable[..., dict[str, int]],
    summary: str,
) -> type[BaseApi]:
    """One action endpoint of a workflow: POST a `serializer_class` body; `_command` checks access
    and input, then calls `service(workflow_id=…, actor=…, **body)`."""

    @extend_schema(request=serializer_class, responses=_SELECTION_RESULT, summary=summary)
    def post(self: BaseApi, request: Request, workflow_id: int) -> Response:
        return _command(
            request,
            self,
            workflow_id,
            serializer_class,
            lambda wf, d: service(workflow_id=wf.pk, actor=request.user, **d),
        )

    return type(name, (BaseApi,), {"post": post, "__doc__": summary})


WorkflowCancelApi = _command_api(
    "WorkflowCancelApi", SelectionSerializer, workflow_cancel, "Cancel non-final jobs"
)
WorkflowPauseApi = _command_api(
    "WorkflowPauseApi",
    LabelSelectionSerializer,
    workflow_pause,
    "Pause tasks: activated jobs are taken back, nothing new is brokered (409 when all ended)",
)
WorkflowResumeApi = _command_api(
    "WorkflowResumeApi", LabelSelectionSerializer, workflow_resume, "Resume paused tasks"
)
WorkflowRetryApi = _command_api(
    "WorkflowRetryApi", SelectionSerializer, workflow_retry, "Retry failed jobs (and those pruned below)"
)
WorkflowRestartApi = _command_api(
    "WorkflowRestartApi",
    SelectionSerializer,
    workflow_restart,
    "Run failed, cancelled and pruned jobs again (never finished ones)",
)
WorkflowBoostPriorityApi = _command_api(
    "WorkflowBoostPriorityApi", BoostPrioritySerializer, workflow_boost_priority, "Set or raise priority"
)
WorkflowSetMemoryApi = _command_api(
    "WorkflowSetMemoryApi", SetMemorySerializer, jobs_set_memory, "Set memory of a selection"
)


# --- tasks, jobs, attempts ---------------------------------------------------------------------


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
    "computingsite": Filter("queue_id"),
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

    def base_queryset(self) -> QuerySet[Any]:
        return Job.objects.all()


class JobDetailApi(BaseApi):
    @extend_schema(responses=JobDetailSerializer)
    def get(self, request: Request, pandaid: int) -> Response:
        job = access.job_get_for_user(request.user, pandaid, token=self.token())
        return Response(JobDetailSerializer(job).data)


class JobAttemptListApi(BaseApi):
    @extend_schema(responses=JobAttemptSerializer(many=True), summary="Every finished attempt of one job")
    def get(self, request: Request, pandaid: int) -> Response:
        job = access.job_get_for_user(request.user, pandaid, token=self.token())
        attempts = JobAttempt.objects.filter(job=job).order_by("attemptnr")
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
        chunks = PayloadLog.objects.filter(job=job, attemptnr=int(raw)).order_by("sequence")
        text = "".join(chunks.values_list("text", flat=True))
        return Response({"pandaid": job.pandaid, "attemptnr": int(raw), "text": text})


@documented_filters
class AttemptListApi(FilteredListApi):
    serializer_class = JobAttemptSerializer
    time_field = "endtime"
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


# --- sites and queues ---------------------------------------------------------------------------


class NamePagination(KeysetPagination):
    ordering = "name"


@documented_filters
class SiteListApi(FilteredListApi):
    serializer_class = SiteSerializer
    pagination_class = NamePagination
    filters = {"name": Filter("name"), "region": Filter("region")}

    def base_queryset(self) -> QuerySet[Any]:
        return Site.objects.prefetch_related("queues")


class SiteDetailApi(BaseApi):
    @extend_schema(responses=SiteSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(SiteSerializer(access.site_get_for_user(request.user, name, token=self.token())).data)


@documented_filters
class QueueListApi(FilteredListApi):
    serializer_class = QueueSerializer
    pagination_class = NamePagination
    filters = {"name": Filter("name"), "site": Filter("site__name"), "status": Filter("status")}

    def base_queryset(self) -> QuerySet[Any]:
        return Queue.objects.select_related("site").prefetch_related("resource_types")


class QueueDetailApi(BaseApi):
    @extend_schema(responses=QueueSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(
            QueueSerializer(access.queue_get_for_user(request.user, name, token=self.token())).data
        )


class PingApi(BaseApi):
    @extend_schema(
        responses=inline_serializer(
            "Ping",
            {
                "ok": serializers.BooleanField(),
                "version": serializers.CharField(),
                "user": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
            },
        )
    )
    def get(self, request: Request) -> Response:
        roles = sorted(user_roles(request.user, self.token()))
        return Response(
            {"ok": True, "version": __version__, "user": request.user.get_username(), "roles": roles}
        )
