"""Sites and queues over REST (reads; `manage.py load_queues` writes them), and the ping."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from ailuro import __version__
from core.roles import user_roles
from dispatcher import access
from dispatcher.api.base import BaseApi, Filter, FilteredListApi, NamePagination, documented_filters
from dispatcher.models import Queue, Site
from dispatcher.serializers import QueueSerializer, SiteSerializer


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
