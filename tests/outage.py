"""Helpers of the tests that run a real deployment on a private PostgreSQL cluster
(tests/pgcluster.py) and take the database away: `manage.py` against the cluster, and HTTP calls
that return every answer (errors included) with its headers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.ailuro.server import ROOT


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this one's without DJANGO_SETTINGS_MODULE (the child
    reads the database from DATABASE_URL), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(extra)
    return env


def manage(url: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """`manage.py <args>` on the database `url` (no broker); its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(DATABASE_URL=url, CELERY_BROKER_URL="memory://", **(env or {})),
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
        input=stdin,
    )
    return done.stdout.strip()


def send(
    request: urllib.request.Request,
    *,
    opener: urllib.request.OpenerDirector | None = None,
    timeout: float = 30,
) -> Answer:
    """The answer to `request`, a 4xx or 5xx as much as a 200."""
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


def ask(
    base: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    body: bytes | None = None,
    token: str = "",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    """GET `path` (POST with a `form` or a raw `body`) with a Bearer `token` when one is given."""
    data = urllib.parse.urlencode(form).encode() if form is not None else body
    request = urllib.request.Request(base + path, data=data, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    return send(request, timeout=timeout)


def until(call: Callable[[], Answer], status: int, within_s: float = 20) -> Answer:
    """The first answer with `status`, or the last answer when none came in time."""
    deadline = time.monotonic() + within_s
    while True:
        answer = call()
        if answer.status == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)
