"""Template helpers shared by the monitor pages: links that add a filter, relative ages, states."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from ailuro import units

register = template.Library()


@register.simple_tag
def query_with(params: dict[str, str], *pairs: Any) -> str:
    """`?` + the current filters with the given name/value pairs set (a facet click); the page
    cursor is dropped because the selection changed. A value of None removes the parameter."""
    updated = {k: v for k, v in params.items() if k not in {"cursor", "json"}}
    for name, value in zip(pairs[::2], pairs[1::2], strict=True):
        if value is None:
            updated.pop(str(name), None)
        else:
            updated[str(name)] = str(value)
    return "?" + urlencode(updated)


@register.filter
def get(mapping: dict[Any, Any] | None, key: Any) -> Any:
    return (mapping or {}).get(key)


def _age_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h ago"


@register.filter
def utc(value: datetime | None) -> SafeString | str:
    """`2026-11-22 03:10:04` (UTC) with the relative age beside it."""
    if value is None:
        return "–"
    value = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}">{}</time> <span class="age">{}</span>',
        value.isoformat(),
        value.strftime("%Y-%m-%d %H:%M:%S"),
        _age_text(timezone.now() - value),
    )


@register.filter
def state(value: str | None) -> SafeString:
    return format_html('<span class="badge st-{}">{}</span>', value or "none", value or "–")


@register.filter
def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


@register.filter
def bar_width(value: float | None) -> str:
    """A progress bar segment's CSS width: two decimals, so a 0.3 % failed share is not drawn as
    0 % (and the finished share not rounded up over it)."""
    return f"{value or 0.0:.2f}%"


@register.filter
def done_pct(value: float | None) -> str:
    """The finished share next to a bar, rounded down: 100 % only when every job finished."""
    return f"{math.floor(value or 0.0)}%"


@register.filter
def duration(value: timedelta | float | None) -> str:
    if value is None:
        return "–"
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@register.filter
def core_hours(core_s: int | None) -> str:
    """Core-seconds as core-hours, two decimals ("–" for none)."""
    if not core_s:
        return "0"
    return f"{core_s / 3600:.2f}"


@register.filter
def memory(kb: int | None) -> str:
    """A stored kB figure (peak RSS/PSS) as MB or GB with its unit (`ailuro.units.memory_text`)."""
    return units.memory_text(kb)


@register.filter
def memory_mb(mb: int | None) -> str:
    """A stored MB figure (a request or limit) by the same rule."""
    return units.memory_text_mb(mb)


_JSON_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


@register.simple_tag
def figure(fig: dict[str, Any], element_id: str) -> SafeString:
    """A chart container and its figure as inert JSON (escaped like `json_script`); pandamon.js
    draws it. Labels from the database (job names, diags) stay data, never markup."""
    from django.core.serializers.json import DjangoJSONEncoder

    data = json.dumps(fig, cls=DjangoJSONEncoder).translate(_JSON_ESCAPES)
    return format_html(
        '<div class="chart" id="{}"></div><script type="application/json" data-figure="{}">{}</script>',
        element_id,
        element_id,
        mark_safe(data),  # noqa: S308  (JSON with <, >, & escaped, as json_script does)
    )


@register.filter
def facet_value(value: Any) -> Any:
    """An empty facet value is PanDA's `Not specified`, which is also how one filters for it."""
    return "Not specified" if value is None or value == "" else value
