"""Decoding of pilot requests and typing of their loosely typed values (pilot-protocol.md §2.1).

Pilots send the same call four ways: gzip-compressed JSON without a Content-Encoding header (pilot
3.11 urllib), form-urlencoded (3.7 curl, Harvester), a query string (GET), and JSON with or without
`Content-Encoding: gzip` (the v1 API). Values arrive as strings from forms and typed from JSON, and
times as epoch floats, strings of epoch floats or `"%Y-%m-%d %H:%M:%S"`. Everything here is pure:
`request_params` returns a flat dict, and the `as_*` helpers raise `ProtocolError` (→ HTTP 400)
naming the field when a value cannot be read. Unknown keys are kept and simply never looked at.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest

from core.parsers import may_hold_surrogates, strings_with_lone_surrogates

# Nothing a pilot or Harvester sends is bigger than a bulk update of a few thousand jobs.
MAX_BODY_BYTES = 16 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class ProtocolError(Exception):
    """A request the protocol cannot accept: answered with `status` and the message, never a 500."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def max_json_depth() -> int:
    return int(settings.AILURO["MAX_JSON_DEPTH"])


def _gunzip(body: bytes) -> bytes:
    # Bounded decompression: a tiny gzip bomb must not expand into gigabytes before we notice.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise ProtocolError(f"request body is not valid gzip: {exc}") from None
    if len(out) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise ProtocolError(f"request body exceeds {MAX_BODY_BYTES} bytes once decompressed", 413)
    if not inflater.eof:
        raise ProtocolError("request body is not valid gzip: truncated stream")
    return out


def _check_depth(value: Any, limit: int) -> None:
    """Iterative depth check (a recursive one would itself hit the recursion limit); only
    containers are visited, so a flat list of a hundred updates costs a hundred steps."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ProtocolError(f"JSON nested deeper than {limit} levels")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))


def json_loads(raw: bytes | str, *, what: str = "request body") -> Any:
    """Parse JSON with the depth bound; errors name `what`."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ProtocolError(f"{what}: JSON nested deeper than {max_json_depth()} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if may_hold_surrogates(raw):
        bad = strings_with_lone_surrogates(value)
        if bad is not None:
            raise ProtocolError(f"{what}: unpaired UTF-16 surrogate (\\ud800-\\udfff) in {bad!r}")
    limit = max_json_depth()
    opened = raw.count(b"{") + raw.count(b"[") if isinstance(raw, bytes) else raw.count("{") + raw.count("[")
    if opened <= limit:  # fewer brackets than levels allowed: no need to walk the value
        return value
    try:
        _check_depth(value, limit)
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc.message}") from None
    return value


def decode_body(body: bytes, *, content_type: str, content_encoding: str) -> dict[str, Any]:
    """The parameters of a POST body, whatever of the encodings of §2.1 it uses."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"request body exceeds {MAX_BODY_BYTES} bytes", 413)
    if content_encoding.strip().lower() == "gzip" or body[:2] == _GZIP_MAGIC:
        body = _gunzip(body)
    if not body.strip():
        return {}
    ctype = content_type.split(";", 1)[0].strip().lower()
    looks_json = body.lstrip()[:1] in (b"{", b"[")
    if ctype == "application/x-www-form-urlencoded" and not looks_json:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise ProtocolError("form body is not valid UTF-8") from None
        return dict(parse_qsl(text, keep_blank_values=True))
    if ctype in ("application/json", "") or looks_json:
        value = json_loads(body)
        if not isinstance(value, dict):
            raise ProtocolError("request body must be a JSON object")
        return value
    raise ProtocolError(f"unsupported Content-Type {ctype!r}: send JSON or form-urlencoded", 415)


def request_params(request: HttpRequest) -> dict[str, Any]:
    """Query-string parameters overlaid with the body's (the body wins)."""
    params: dict[str, Any] = dict(request.GET.items())
    if request.method == "POST":
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ProtocolError(f"request body exceeds {MAX_BODY_BYTES} bytes", 413)
        params.update(
            decode_body(
                request.body,
                content_type=str(request.META.get("CONTENT_TYPE", "")),
                content_encoding=str(request.META.get("HTTP_CONTENT_ENCODING", "")),
            )
        )
    return params


def pick(params: Mapping[str, Any], *names: str) -> Any:
    """The first present value among the names (a legacy name and its v1 twin)."""
    for name in names:
        value = params.get(name)
        if value is not None:
            return value
    return None


def as_str(params: Mapping[str, Any], *names: str, default: str = "", limit: int | None = None) -> str:
    value = pick(params, *names)
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        raise ProtocolError(f"{names[0]} must be a string, not {type(value).__name__}")
    text = str(value)
    if text == "NULL":
        return default
    return text[:limit] if limit else text


def as_int(params: Mapping[str, Any], *names: str, default: int | None = None) -> int | None:
    value = pick(params, *names)
    if value is None or value == "" or value == "NULL":
        return default
    if isinstance(value, bool):
        raise ProtocolError(f"{names[0]} must be a number, got {value!r}")
    if isinstance(value, int):
        if abs(value) > 2**62:
            raise ProtocolError(f"{names[0]} is out of range: {value}")
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"{names[0]} must be a number, got {str(value)[:40]!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ProtocolError(f"{names[0]} must be a finite number, got {str(value)[:40]!r}")
    if abs(number) > 2**62:
        raise ProtocolError(f"{names[0]} is out of range: {str(value)[:40]!r}")
    return int(number)


INT32 = 2**31 - 1


def as_bounded_int(
    params: Mapping[str, Any], *names: str, low: int = -INT32, high: int = INT32, default: int | None = None
) -> int | None:
    """`as_int` within [low, high] (database integer columns are 32-bit)."""
    value = as_int(params, *names, default=default)
    if value is not None and not low <= value <= high:
        raise ProtocolError(f"{names[0]} must be between {low} and {high}, got {value}")
    return value


def as_float(params: Mapping[str, Any], *names: str) -> float | None:
    value = pick(params, *names)
    if value is None or value == "" or value == "NULL":
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{names[0]} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"{names[0]} must be a number, got {str(value)[:40]!r}") from None
    if number != number or number in (float("inf"), float("-inf")) or abs(number) > 1e15:
        raise ProtocolError(f"{names[0]} must be a finite number, got {str(value)[:40]!r}")
    return number


def as_bool(params: Mapping[str, Any], *names: str, default: bool = False) -> bool:
    value = pick(params, *names)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ProtocolError(f"{names[0]} must be true or false, got {str(value)[:40]!r}")


_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


def as_time(params: Mapping[str, Any], *names: str) -> dt.datetime | None:
    """Epoch seconds (number or string) or a formatted UTC time; None when absent."""
    value = pick(params, *names)
    if value is None or value == "" or value == "NULL":
        return None
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        epoch: float | None = float(value)
    else:
        text = str(value).strip()
        try:
            epoch = float(text)
        except ValueError:
            epoch = None
        if epoch is None:
            try:
                parsed = dt.datetime.fromisoformat(text)
            except ValueError:
                parsed = None
                for fmt in _TIME_FORMATS:
                    try:
                        parsed = dt.datetime.strptime(text, fmt)  # noqa: DTZ007  (UTC by protocol)
                        break
                    except ValueError:
                        continue
            if parsed is None:
                raise ProtocolError(
                    f"{names[0]} must be epoch seconds or 'YYYY-MM-DD HH:MM:SS', got {text[:40]!r}"
                )
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if epoch is None or epoch != epoch or not 0 <= epoch < 32503680000:  # before year 3000
        raise ProtocolError(f"{names[0]} is not a plausible time: {value!r}")
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
