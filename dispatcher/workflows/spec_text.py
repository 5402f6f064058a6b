"""Workflow spec text → plain data: YAML or JSON, bounded in size and depth, only JSON types, with
the line and column of a syntax error. The data is checked and expanded by `spec.py`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from core.parsers import may_hold_surrogates, strings_with_lone_surrogates
from dispatcher.workflows.dag import WorkflowInvalid, WorkflowTooLarge

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_BaseLoader):
    """Safe YAML without implicit timestamps: `2024-01-01` stays a string, as JSON would keep it."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def spec_load(raw: bytes | str, *, content_type: str = "", max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Parse a spec body (YAML or JSON) into plain data, with the position of any syntax error.

    1. Refuse bodies over `max_bytes` (413) before decoding them.
    2. JSON when the content type says so or the text opens with `{`; YAML otherwise (and when
       text opening with `{` is not JSON, since YAML flow style opens the same way).
    3. The result must be a mapping of JSON types no deeper than `max_depth`.
    """
    size = len(raw)
    if size > max_bytes:
        raise WorkflowTooLarge(f"the spec is {size} bytes; the limit is {max_bytes} (AILURO_MAX_SPEC_BYTES)")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkflowInvalid(f"the spec is not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        text = text[1:]
    is_json = "json" in content_type.lower()
    data: Any
    from_json = False
    if is_json or text.lstrip().startswith("{"):
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
            from_json = True
        except RecursionError:
            raise WorkflowInvalid(
                f"the spec nests deeper than {max_depth} levels (AILURO_MAX_JSON_DEPTH)"
            ) from None
        except json.JSONDecodeError as exc:
            if is_json:
                raise WorkflowInvalid(
                    f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    line=exc.lineno,
                    column=exc.colno,
                ) from None
            data = _yaml_load(text)
    else:
        data = _yaml_load(text)
    if not isinstance(data, dict):
        raise WorkflowInvalid(f"the spec must be a mapping at the top level, got {type_name(data)}")
    _check_plain(data, max_depth, scalars=not from_json)
    if may_hold_surrogates(text):
        bad = strings_with_lone_surrogates(data)
        if bad is not None:
            raise WorkflowInvalid(f"unpaired UTF-16 surrogate (\\ud800-\\udfff) in {bad!r}")
    return data


def _refuse_constant(name: str) -> Any:
    raise WorkflowInvalid(f"{name} is not a number a spec may hold")


def _yaml_load(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        where = f" at line {line}, column {column}" if mark else ""
        raise WorkflowInvalid(f"malformed YAML{where}: {problem}", line=line, column=column) from None
    except yaml.YAMLError as exc:
        raise WorkflowInvalid(f"malformed YAML: {exc}") from None


def type_name(value: Any) -> str:
    """How an error message names the type of a spec value."""
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_SCALARS = (str, int, bool, type(None))


def _check_plain(data: Any, max_depth: int, *, scalars: bool = True) -> None:
    """Only JSON types, finite numbers, string keys, at most `max_depth` levels.

    Level by level over containers only, so a 100,000-job spec costs one pass over its dicts and
    lists. JSON text needs no scalar checks (json.loads makes nothing else, and NaN is refused
    while parsing); YAML does (`!!binary`, `!!set`, `.nan`). Shared YAML aliases are visited once.
    """
    level: list[Any] = [data]
    depth = 1
    seen: set[int] = set()
    while level:
        if depth > max_depth:
            raise WorkflowInvalid(f"the spec nests deeper than {max_depth} levels (AILURO_MAX_JSON_DEPTH)")
        below: list[Any] = []
        for container in level:
            if id(container) in seen:
                continue
            seen.add(id(container))
            items = container.values() if type(container) is dict else container
            if scalars and type(container) is dict:
                for key in container:
                    if type(key) is not str:
                        raise WorkflowInvalid(f"keys must be strings, got {key!r}")
            for value in items:
                kind = type(value)
                if kind is dict or kind is list:
                    below.append(value)
                elif scalars and not isinstance(value, _SCALARS):
                    if kind is float:
                        if not math.isfinite(value):
                            raise WorkflowInvalid(f"{value!r} is not a finite number")
                    else:
                        raise WorkflowInvalid(f"unsupported value of type {kind.__name__}")
        level = below
        depth += 1
