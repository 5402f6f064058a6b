"""`{% load dag %}`: a DAG or a timeline container and its payload as inert JSON (escaped like
`json_script`); `static/js/dag.js` draws it as SVG. Payloads come from `pandamon/dag_view.py`."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_JSON_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


def _embed(kind: str, payload: dict[str, Any], element_id: str, css: str) -> SafeString:
    data = json.dumps(payload, cls=DjangoJSONEncoder).translate(_JSON_ESCAPES)
    return format_html(
        '<div class="{}" id="{}"></div><script type="application/json" data-{}="{}">{}</script>',
        css,
        element_id,
        kind,
        element_id,
        mark_safe(data),  # noqa: S308  (JSON with <, >, & escaped, as json_script does)
    )


@register.simple_tag
def svg_dag(payload: dict[str, Any], element_id: str) -> SafeString:
    return _embed("dag", payload, element_id, "dag")


@register.simple_tag
def svg_timeline(payload: dict[str, Any], element_id: str) -> SafeString:
    return _embed("timeline", payload, element_id, "timeline")
