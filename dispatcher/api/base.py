"""What every REST view of the dispatcher (`/api/v1/`) shares: errors as JSON naming the field,
read access, keyset pagination, and the monitor's filter grammar for lists.

Views are thin: parse (serializer or the bounded spec reader), call one access function, one query
or one service, answer. Lists use keyset (cursor) pagination and the monitor's filter names with
its grammar (`a|b` alternatives, `!a` negation, `*` wildcards); an unknown filter is a 400 that
names it. Errors are JSON: `{"detail": …, "field": …}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.generics import ListAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.models import ApiToken
from dispatcher import access
from dispatcher.models import Workflow
from dispatcher.queries import archive_reached, prefix_q
from dispatcher.workflows import WorkflowInvalid


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
    # A foreign key stored by name (Job.queue → computingsite): its LIKE goes through the join.
    like_lookup: str | None = None


_RESERVED = frozenset({"cursor", "limit", "format"})

# An integer filter's whole value in the monitor's grammar: empty (no filter), or `a|b|…` with an
# optional leading `!`, each an ASCII integer. The view checks it and the schema publishes it, so a
# value the schema calls invalid ("", " 7", "٣", "1|x") is never quietly read as something else.
INTEGER_FILTER = r"^(!?-?[0-9]+(\|-?[0-9]+)*)?$"
_INTEGER_FILTER = re.compile(INTEGER_FILTER)


def _filter_value(name: str, raw: str, kind: type) -> Any:
    if "\x00" in raw:
        # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
        raise ApiError(f"filter {name} contains a NUL character", field=name)
    if kind is int:  # apply_filters has checked the value against INTEGER_FILTER
        return int(raw)
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
        if spec.kind is int and not _INTEGER_FILTER.fullmatch(raw):
            raise ApiError(f"filter {name} takes integers written a|b or !a, got {raw!r}", field=name)
        negate = raw.startswith("!")
        values = [v for v in (raw[1:] if negate else raw).split("|") if v != ""]
        condition = Q()
        for value in values:
            if "*" in value and spec.kind is str and value.index("*") == len(value) - 1 and len(value) > 1:
                # A prefix: an index range (dispatcher.queries.prefix_q), not a regex over every row.
                condition |= prefix_q(
                    spec.lookup, _filter_value(name, value[:-1], str), like_column=spec.like_lookup
                )
            elif "*" in value and spec.kind is str:
                pattern = "^" + ".*".join(re.escape(part) for part in value.split("*")) + "$"
                condition |= Q(**{f"{spec.like_lookup or spec.lookup}__regex": pattern})
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


def window_start(params: Mapping[str, str]) -> datetime | None:
    """Where `hours` / `days` (already checked by `apply_time_window`) start the window; None: all time."""
    starts = [
        timezone.now() - timedelta(seconds=float(params[name]) * unit)
        for name, unit in (("hours", 3600), ("days", 86400))
        if params.get(name)
    ]
    return max(starts) if starts else None


class LiveAndArchived:
    """The live and the archived rows of one selection as the keyset pagination reads them: each
    ordered by the primary key and filtered by the cursor's position, then the two slices merged by
    that key (live and archived keys never meet: a row moves with its key). Only what
    `KeysetPagination` calls is here."""

    def __init__(self, live: QuerySet[Any], archived: QuerySet[Any], *, descending: bool = True) -> None:
        self.live, self.archived, self.descending = live, archived, descending

    def order_by(self, *fields: str) -> LiveAndArchived:
        descending = fields[0].startswith("-")
        return LiveAndArchived(
            self.live.order_by(*fields), self.archived.order_by(*fields), descending=descending
        )

    def filter(self, **lookups: Any) -> LiveAndArchived:
        return LiveAndArchived(
            self.live.filter(**lookups), self.archived.filter(**lookups), descending=self.descending
        )

    def __getitem__(self, window: slice) -> list[Any]:
        stop = window.stop
        rows = [*self.live[:stop], *self.archived[:stop]]
        rows.sort(key=lambda row: row.pk, reverse=self.descending)
        return rows[window.start or 0 : stop]


class FilteredListApi(BaseApi, ListAPIView):  # type: ignore[type-arg]
    pagination_class = KeysetPagination
    filter_backends: list[Any] = []
    filters: Mapping[str, Filter] = {}
    # The column `hours` / `days` look at; lists without one refuse those parameters.
    time_field: str | None = None
    # The archive table of the listed rows (decision 0012): read too when the window reaches the
    # archive's horizon, so a list answers the same before and after the archive move.
    archive_model: type[Model] | None = None

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
        live = self._selected(self.base_queryset(), params)
        if self.archive_model is None or not archive_reached(window_start(params)):
            return live
        archived = self._selected(self.archive_model._default_manager.all(), params)
        # Duck-typed: the pagination and the serializer only order, filter, slice and iterate.
        return cast(QuerySet[Any], LiveAndArchived(live, archived))

    def _selected(self, queryset: QuerySet[Any], params: Mapping[str, str]) -> QuerySet[Any]:
        if self.time_field:
            queryset = apply_time_window(queryset, params, self.time_field)
            params = {k: v for k, v in params.items() if k not in ("hours", "days")}
        return apply_filters(queryset, params, self.filters)


def documented_filters(cls: type[FilteredListApi]) -> type[FilteredListApi]:
    """Publish a list's filters (and `hours` / `days` where it has a time column) in the schema."""
    parameters = [
        OpenApiParameter(
            name,
            # Integer filters take the grammar's `a|b` / `!a` (INTEGER_FILTER); text filters cannot
            # carry NUL (PostgreSQL text refuses it; the view answers 400).
            {"type": "string", "pattern": INTEGER_FILTER if spec.kind is int else "^[^\\u0000]*$"},
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


class NamePagination(KeysetPagination):
    ordering = "name"
