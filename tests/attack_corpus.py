"""The attack corpus: every URL pattern of the project, found by walking Django's resolver (a new
endpoint is covered the day it is added), with its path parameters filled with valid and hostile
values, sent hostile query strings, bodies and headers.

`attacks(endpoints, ids)` yields `Attack`s; tests/core/test_attack_corpus.py sends them with each
credential and asserts no 500 anywhere and no row written by a refused request.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern

# --- the endpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    route: str  # the pattern as written, prefixes joined: "api/v1/jobs/<int:pandaid>/"
    name: str
    callback: Any
    regex: bool  # a re_path (the admin's, the cache's)

    @property
    def admin(self) -> bool:
        return self.route.startswith("admin/")

    @property
    def params(self) -> list[str]:
        if self.regex:
            return re.findall(r"\(\?P<(\w+)>", self.route)
        return [name for _, name in re.findall(r"<(?:(\w+):)?(\w+)>", self.route)]


def endpoints() -> list[Endpoint]:
    """Every URL pattern of the project's URLconf, its include() prefixes joined."""
    found: list[Endpoint] = []

    def walk(patterns: list[Any], prefix: str, regex: bool) -> None:
        for entry in patterns:
            part = str(entry.pattern)
            is_regex = regex or isinstance(entry.pattern, RegexPattern)
            if is_regex and not isinstance(entry.pattern, RoutePattern):
                part = part.removeprefix("^").removesuffix("$")
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + part, is_regex)
            elif isinstance(entry, URLPattern):
                found.append(Endpoint(prefix + part, entry.name or "", entry.callback, is_regex))

    walk(get_resolver().url_patterns, "", False)
    return found


# What a route's parameter is, by its name (valid values come from the test's rows).
HOSTILE_INT = ["99999999999999999999999", "9223372036854775808", "0"]
HOSTILE_STR = [
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..",
    "a%00b",
    "%ED%A0%80",  # a UTF-16 surrogate encoded as UTF-8: not valid UTF-8
    "%FF%FE",
    "%F0%9F%90%BC",
    "x" * 3000,
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "'%20OR%201=1--",
]


def _fill_regex(route: str, values: Mapping[str, str]) -> str:
    """A concrete path for a regex route: named groups replaced, optional groups dropped,
    alternations reduced to their first branch, escapes undone."""
    out = route
    # Named groups, innermost brackets allowed one level deep ([^/]+?, (?:a|b)).
    named = re.compile(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)")
    out = named.sub(lambda m: values.get(m.group(1), "1"), out)
    out = re.sub(r"\(\?:[^()]*\)\?", "", out)  # optional non-capturing groups
    out = re.sub(r"\(\?:([^()|]*)(?:\|[^()]*)?\)", r"\1", out)  # (?:a|b) -> a
    return out.replace("\\", "")


def fill(endpoint: Endpoint, values: Mapping[str, str]) -> str:
    """The endpoint's path with each parameter taken from `values` ("1" when not given)."""
    if endpoint.regex:
        return "/" + _fill_regex(endpoint.route, values)
    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: values.get(m.group(2), "1"), endpoint.route)


def int_param(endpoint: Endpoint, name: str) -> bool:
    if endpoint.regex:
        found = re.search(rf"\(\?P<{name}>([^)]*)\)", endpoint.route)
        return bool(found and found.group(1) in {r"\d+", "[0-9]+"})
    return bool(re.search(rf"<int:{name}>", endpoint.route))


# --- query strings --------------------------------------------------------------------------

GENERIC_KEYS = [
    "limit",
    "cursor",
    "format",
    "page",
    "sort",
    "o",
    "q",
    "p",
    "hours",
    "days",
    "json",
    "next",
    "part",
    "all",
    "_changelist_filters",
    "display_limit",
    "name",
    "status",
]


def query_keys() -> list[str]:
    """Every filter name the project's views declare (DRF list views' `filters`, the monitor's
    field tables) and the generic ones (pagination, sorting, admin search)."""
    keys = set(GENERIC_KEYS)
    for endpoint in endpoints():
        view = getattr(endpoint.callback, "cls", None) or getattr(endpoint.callback, "view_class", None)
        filters = getattr(view, "filters", None)
        if isinstance(filters, Mapping):
            keys.update(str(k) for k in filters)
    from pandamon import filters as monitor_filters

    for name in dir(monitor_filters):
        table = getattr(monitor_filters, name)
        if name.endswith("_FIELDS") and isinstance(table, Mapping):
            keys.update(str(k) for k in table)
    return sorted(keys)


HOSTILE_QUERY_VALUES = [
    "%00",
    "a%00b",
    "%ED%A0%80",
    "%FF",
    "99999999999999999999999",
    "-9223372036854775809",
    "-1",
    "1e999",
    "NaN",
    "'%22%3E%3Cscript%3E",
    "..%2F..%2Fetc%2Fpasswd",
    "2026-13-45T99:99:99",
    "x" * 5000,
]


def hostile_queries() -> list[str]:
    """One query string per hostile value, every known key carrying it; plus repeated keys."""
    keys = query_keys()
    out = ["&".join(f"{key}={value}" for key in keys) for value in HOSTILE_QUERY_VALUES]
    out.append("&".join(f"{key}=1&{key}=2" for key in keys))
    out.append("%00=1&%ED%A0%80=2")
    return out


# --- bodies and headers ---------------------------------------------------------------------

FIELDS = [
    "name",
    "job_id",
    "jobId",
    "pandaid",
    "attempt_nr",
    "attemptNr",
    "lease",
    "job_status",
    "state",
    "site_name",
    "siteName",
    "node",
    "memory_mb",
    "priority",
    "comment",
    "spec",
    "labels",
    "pandaids",
    "jobstatus",
    "sequence",
    "text",
    "workflow",
    "command_name",
    "args",
    "kwargs",
    "username",
    "password",
    "queue",
    "n_jobs",
    "verb",
    "reason",
    "max_rss",
    "start_time",
]
HUGE_INT = 10**30
DEEP = 20_000


@dataclass(frozen=True)
class Body:
    label: str
    data: bytes
    content_type: str
    extra: dict[str, str] = field(default_factory=dict)  # headers, WSGI style (HTTP_…)


def _every_field(value: Any) -> bytes:
    return json.dumps(dict.fromkeys(FIELDS, value)).encode()


def _form(value: str) -> bytes:
    return "&".join(f"{name}={value}" for name in FIELDS).encode()


def hostile_bodies() -> list[Body]:
    js = "application/json"
    form = "application/x-www-form-urlencoded"
    bomb = gzip.compress(b"[" * (32 * 2**20), 9)
    return [
        Body("malformed JSON", b'{"job_id": 1, "name": ', js),
        Body("JSON that is not an object", b'"just a string"', js),
        Body("NUL in strings", _every_field("a\x00b"), js),
        Body("NUL in keys", b'{"na\\u0000me": "x", "job_id\\u0000": 1}', js),
        Body("lone surrogate", _every_field("\ud800x"), js),
        Body("lone surrogate in a key", b'{"\\udc00": 1}', js),
        Body("integers beyond 64 bits", _every_field(HUGE_INT), js),
        Body("negative integers", _every_field(-1), js),
        Body("floats", _every_field(1e308), js),
        Body("NaN", b'{"job_id": NaN, "priority": Infinity}', js),
        Body("wrong types: lists", _every_field([1, "a", None]), js),
        Body("wrong types: objects", _every_field({"$gt": ""}), js),
        Body("wrong types: booleans", _every_field(True), js),
        Body(
            "huge array",
            json.dumps({"pandaids": list(range(100_000)), "labels": ["a"] * 50_000}).encode(),
            js,
        ),
        Body("deep nesting", b'{"spec": ' + b"[" * DEEP + b"]" * DEEP + b"}", js),
        Body("deep nesting, unclosed", b"[" * DEEP, js),
        Body("path traversal in names", _every_field("../../../../etc/passwd"), js),
        Body("a long string", json.dumps({"name": "x" * 300_000, "comment": "y" * 300_000}).encode(), js),
        Body("not UTF-8", b'{"name": "\xff\xfe"}', js),
        Body("form with NUL", _form("a%00b"), form),
        Body("form with invalid UTF-8", _form("%ED%A0%80%FF"), form),
        Body("form with huge integers", _form(str(HUGE_INT)), form),
        Body("form with negative integers", _form("-1"), form),
        Body("form with traversal", _form("..%2F..%2Fetc%2Fpasswd"), form),
        Body(
            "YAML bomb",
            b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
            + b"".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n".encode()
                for i in range(8)
            ),
            "application/yaml",
        ),
        Body(
            "YAML with a Python tag", b"name: !!python/object/apply:os.system ['true']\n", "application/yaml"
        ),
        Body("wrong content type: XML", b"<?xml version='1.0'?><job id='1'/>", "application/xml"),
        Body("wrong content type: text", b"job_id=1", "text/plain"),
        Body("no content type", b'{"job_id": 1}', ""),
        Body(
            "broken multipart",
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n',
            "multipart/form-data; boundary=x",
        ),
        Body("multipart without boundary", b"garbage", "multipart/form-data"),
        Body("gzip bomb", bomb, "application/json", {"HTTP_CONTENT_ENCODING": "gzip"}),
        Body("gzip bomb, no header", bomb, "application/octet-stream"),
        Body("charset that does not exist", b'{"name": "x"}', "application/json; charset=no-such-codec"),
    ]


HOSTILE_HEADERS: list[dict[str, str]] = [
    {"HTTP_AUTHORIZATION": "Bearer " + "A" * 20_000},
    {"HTTP_AUTHORIZATION": "Bearer ail_\x00\x01"},
    {"HTTP_AUTHORIZATION": "Basic %%%"},
    {"HTTP_COOKIE": "sessionid=" + "x" * 8000 + "; csrftoken=\x00"},
    {"HTTP_X_FORWARDED_FOR": "999.999.999.999, ::zz, " + "1." * 4000},
    {"HTTP_ACCEPT": "application/json;q=" + "9" * 400},
    {"HTTP_ACCEPT_LANGUAGE": "xx-" + "a" * 5000},
    {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "\x00" * 10},
    {"HTTP_IF_MODIFIED_SINCE": "Mon, 99 Foo 99999 99:99:99 GMT"},
    {"HTTP_RANGE": "bytes=99999999999999999999-"},
]


# --- rows -----------------------------------------------------------------------------------


def row_counts() -> dict[str, int]:
    """The number of rows of every model's table, in one query."""
    tables = sorted({model._meta.db_table for model in apps.get_models() if model._meta.managed})
    quote = connection.ops.quote_name
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {quote(t)}" for t in tables)  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {str(name): int(count) for name, count in cursor.fetchall()}


def iter_paths(endpoint: Endpoint, valid: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(label, path): the endpoint with valid values, then each parameter hostile in turn."""
    yield "valid", fill(endpoint, valid)
    for name in endpoint.params:
        hostile = HOSTILE_INT if int_param(endpoint, name) else HOSTILE_STR
        for value in hostile:
            yield f"{name}={value[:20]}", fill(endpoint, {**valid, name: value})
