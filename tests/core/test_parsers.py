from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from core.parsers import JsonInputError, json_loads_guarded
from core.services import token_create

pytestmark = pytest.mark.django_db


def _client() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice')}")
    return client


def test_a_deeply_nested_array_is_refused_not_a_recursion_error() -> None:
    body = b"[" * 100_000 + b"]" * 100_000  # ~200 KB: DRF's own parser answers 500 here

    with pytest.raises(JsonInputError, match="nested deeper than 32 levels"):
        json_loads_guarded(body)


def test_nesting_just_under_the_limit_parses_and_just_over_is_refused() -> None:
    assert json_loads_guarded("[" * 32 + "]" * 32) == json.loads("[" * 32 + "]" * 32)
    with pytest.raises(JsonInputError, match="deeper than 32"):
        json_loads_guarded('{"a":' * 33 + "1" + "}" * 33)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": Infinity}', "Infinity is not valid JSON"),
        (b'{"a": -Infinity}', "-Infinity is not valid JSON"),
        (b'{"a": "x\\u0000y"}', "NUL characters"),
        (b'{"a\\u0000": 1}', "NUL characters"),
        (b'{"a": "\xff\xfe"}', "not UTF-8"),
        (b'{"a": 1,}', "malformed JSON"),
        (b"", "malformed JSON"),
    ],
)
def test_bad_json_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(JsonInputError, match=reason):
        json_loads_guarded(body)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _has_nul(value: object) -> bool:
    """A NUL character in any string of the value, keys included (the text's `\\u0000` would also
    match a key spelling backslash-u-0-0-0-0)."""
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_has_nul, value))
    return isinstance(value, str) and "\x00" in value


@given(
    st.recursive(
        st.none() | st.integers() | st.text(),
        lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
        max_leaves=30,
    )
)
@example({"\\u0000": None})  # a key spelling the escape, not a NUL: parsed, not refused
@example({"k": "a\x00b"})
def test_any_nested_value_either_round_trips_or_is_refused_cleanly(value: object) -> None:
    text = json.dumps(value)
    if _depth(value) > 32:
        with pytest.raises(JsonInputError, match="nested deeper"):
            json_loads_guarded(text)
    elif _has_nul(value):
        with pytest.raises(JsonInputError, match="NUL characters"):
            json_loads_guarded(text)
    else:
        assert json_loads_guarded(text) == value


def test_the_api_parser_answers_400_naming_the_problem(settings: object) -> None:
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Echo(APIView):
        def post(self, request):  # type: ignore[no-untyped-def]
            return Response({"keys": sorted(request.data)})

    urlpatterns = [path("echo/", Echo.as_view())]
    settings.ROOT_URLCONF = type("urls", (), {"urlpatterns": urlpatterns})  # type: ignore[attr-defined]
    client = _client()

    nested = client.post("/echo/", b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    nan = client.post("/echo/", b'{"a": NaN}', content_type="application/json")
    fine = client.post("/echo/", b'{"b": 1, "a": [1]}', content_type="application/json")

    assert nested.status_code == 400
    assert "nested deeper than 32 levels" in nested.json()["detail"]
    assert nan.status_code == 400
    assert "NaN" in nan.json()["detail"]
    assert fine.status_code == 200
    assert fine.json() == {"keys": ["a", "b"]}
