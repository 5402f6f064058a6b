"""JSON input guards shared by the REST API (DRF parser) and the plain pilot views.

DRF's JSONParser lets a RecursionError escape on a deeply nested array (~200 KB of `[[[…` → HTTP
500). Here every JSON body is parsed by `json_loads_guarded`: malformed JSON, NaN/Infinity, nesting
deeper than AILURO["MAX_JSON_DEPTH"], NUL characters (PostgreSQL rejects them in text) and unpaired
UTF-16 surrogates (`"\\udc00"`: no UTF-8 encodes them, for the database or the answer) are all a
`JsonInputError`, i.e. a 400 that names the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

_SURROGATE = "unpaired UTF-16 surrogates (\\ud800-\\udfff) are not allowed in {where}"


class JsonInputError(ValueError):
    """The body is not acceptable JSON; the message says why and is safe to return to the client."""


def _no_constants(name: str) -> Any:
    raise JsonInputError(f"{name} is not valid JSON (use null or a number)")


def lone_surrogate(text: str) -> bool:
    """True when `text` holds a UTF-16 surrogate that is not part of a pair (JSON's `\\udc00`, YAML's
    too): no UTF-8 encodes it, so PostgreSQL, the log and every rendered answer would fail on it."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def may_hold_surrogates(raw: bytes | str) -> bool:
    """Whether a JSON or YAML text can decode to a lone surrogate at all: only through a `\\uD800`-
    `\\uDFFF` escape (UTF-8 text cannot carry one), so texts without `\\ud` need no walk."""
    return b"\\ud" in raw.lower() if isinstance(raw, bytes) else "\\ud" in raw.lower()


def strings_with_lone_surrogates(value: Any) -> str | None:
    """The first string or key of a parsed value holding a lone surrogate, as an escaped excerpt;
    None when there is none. Iterative, like the depth check."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if lone_surrogate(item):
                return item[:40].encode("utf-8", "backslashreplace").decode()
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if isinstance(key, str) and lone_surrogate(key):
                    return key[:40].encode("utf-8", "backslashreplace").decode()
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return None


def json_depth_and_nul_check(value: Any, max_depth: int) -> None:
    """Iterative walk (no recursion to exhaust): depth of nested arrays/objects, NUL characters and
    lone surrogates in strings and keys."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise JsonInputError("NUL characters (\\u0000) are not allowed in strings")
            if lone_surrogate(item):
                raise JsonInputError(_SURROGATE.format(where="strings"))
        elif isinstance(item, Mapping):
            if depth > max_depth:
                raise JsonInputError(f"JSON nested deeper than {max_depth} levels")
            for key, child in item.items():
                if "\x00" in key:
                    raise JsonInputError("NUL characters (\\u0000) are not allowed in keys")
                if lone_surrogate(key):
                    raise JsonInputError(_SURROGATE.format(where="keys"))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise JsonInputError(f"JSON nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item)


def _json_depth_check(value: Any, max_depth: int) -> None:
    """`json_depth_and_nul_check` for a value known to hold no NUL: the containers only, level by
    level (`value` is a dict or a list)."""
    level = [value]
    depth = 1
    while level:
        if depth > max_depth:
            raise JsonInputError(f"JSON nested deeper than {max_depth} levels")
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below.extend([c for c in children if type(c) is dict or type(c) is list])
        level = below
        depth += 1


def json_loads_guarded(body: bytes | str, *, max_depth: int | None = None) -> Any:
    """Parse a JSON body or raise JsonInputError naming the problem."""
    limit = max_depth if max_depth is not None else int(settings.AILURO["MAX_JSON_DEPTH"])
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise JsonInputError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise JsonInputError(f"JSON nested deeper than {limit} levels") from None
    except JsonInputError:
        raise
    except ValueError as exc:
        raise JsonInputError(f"malformed JSON: {exc}") from None
    # JSON text can carry a NUL only as the escape \u0000 (a raw control character is malformed
    # JSON) and a lone surrogate only as a \ud800-\udfff escape: without either in the text, the
    # depth of the containers is all there is to check.
    if "\\u0000" in text or may_hold_surrogates(text):
        json_depth_and_nul_check(value, limit)
    elif type(value) is dict or type(value) is list:
        _json_depth_check(value, limit)
    return value


class GuardedJSONParser(BaseParser):
    """DRF parser for application/json built on `json_loads_guarded` (400 instead of 500)."""

    media_type = "application/json"

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            return json_loads_guarded(stream.read())
        except JsonInputError as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
