"""The actions on a workflow over REST: one view class per action, each a serializer for its body
and the service it calls (`dispatcher.services.workflow_actions`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from dispatcher import access
from dispatcher.api.base import ApiError, BaseApi
from dispatcher.serializers import (
    BoostPrioritySerializer,
    LabelSelectionSerializer,
    SelectionSerializer,
    SetMemorySerializer,
)
from dispatcher.services import (
    jobs_set_memory,
    workflow_boost_priority,
    workflow_cancel,
    workflow_pause,
    workflow_restart,
    workflow_resume,
    workflow_retry,
)

_ACTION_RESULT = inline_serializer("ActionResult", {"workflow": serializers.IntegerField()})


class WorkflowActionApi(BaseApi):
    """POST a `serializer_class` body: the workflow is checked for write access, the body is
    validated (a 400 names the first bad field), then `service(workflow_id=…, actor=…, **body)`
    runs and its counts are the answer, with the workflow's id."""

    serializer_class: type[serializers.Serializer[Any]]
    service: Callable[..., dict[str, int]]

    @extend_schema(responses=_ACTION_RESULT)
    def post(self, request: Request, workflow_id: int) -> Response:
        workflow = access.workflow_get_for_user(request.user, workflow_id, write=True, token=self.token())
        serializer = self.serializer_class(data=request.data if isinstance(request.data, dict) else {})
        if not serializer.is_valid():
            field, messages = next(iter(serializer.errors.items()))
            detail = messages[0] if isinstance(messages, list) and messages else messages
            if isinstance(detail, dict):
                detail = next(iter(detail.values()))
            raise ApiError(f"{field}: {detail}", field=str(field))
        result = type(self).service(
            workflow_id=workflow.pk, actor=request.user.get_username(), **serializer.validated_data
        )
        return Response({"workflow": workflow.pk, **result})


@extend_schema_view(post=extend_schema(summary="Cancel non-final jobs"))
class WorkflowCancelApi(WorkflowActionApi):
    """Cancel non-final jobs"""

    serializer_class = SelectionSerializer
    service = staticmethod(workflow_cancel)


@extend_schema_view(
    post=extend_schema(
        summary="Pause tasks: activated jobs are taken back, nothing new is brokered (409 when all ended)"
    )
)
class WorkflowPauseApi(WorkflowActionApi):
    """Pause tasks: activated jobs are taken back, nothing new is brokered (409 when all ended)"""

    serializer_class = LabelSelectionSerializer
    service = staticmethod(workflow_pause)


@extend_schema_view(post=extend_schema(summary="Resume paused tasks"))
class WorkflowResumeApi(WorkflowActionApi):
    """Resume paused tasks"""

    serializer_class = LabelSelectionSerializer
    service = staticmethod(workflow_resume)


@extend_schema_view(post=extend_schema(summary="Retry failed jobs (and those pruned below)"))
class WorkflowRetryApi(WorkflowActionApi):
    """Retry failed jobs (and those pruned below)"""

    serializer_class = SelectionSerializer
    service = staticmethod(workflow_retry)


@extend_schema_view(
    post=extend_schema(summary="Run failed, cancelled and pruned jobs again (never finished ones)")
)
class WorkflowRestartApi(WorkflowActionApi):
    """Run failed, cancelled and pruned jobs again (never finished ones)"""

    serializer_class = SelectionSerializer
    service = staticmethod(workflow_restart)


@extend_schema_view(post=extend_schema(summary="Set or raise priority"))
class WorkflowBoostPriorityApi(WorkflowActionApi):
    """Set or raise priority"""

    serializer_class = BoostPrioritySerializer
    service = staticmethod(workflow_boost_priority)


@extend_schema_view(post=extend_schema(summary="Set memory of a selection"))
class WorkflowSetMemoryApi(WorkflowActionApi):
    """Set memory of a selection"""

    serializer_class = SetMemorySerializer
    service = staticmethod(jobs_set_memory)
