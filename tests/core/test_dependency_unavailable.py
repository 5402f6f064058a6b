"""Which failures are "a dependency is unavailable" (503 with Retry-After) and which are bugs (500),
with real exceptions: a PostgreSQL port nobody listens on, a SQL syntax error, a statement timeout,
a locked SQLite file. The outage of a live server is tests/core/test_outage_live.py."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from core.unavailable import BROKER, DATABASE, unavailable_dependency
from tests.ailuro.server import free_port

pytestmark = pytest.mark.django_db


def _raised(call: Any) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - whatever it raised is what is classified
        return exc
    raise AssertionError(f"{call} raised nothing")


def _refused() -> BaseException:
    """What Django raises for a PostgreSQL server that is not there (nothing listens on the port)."""
    settings_dict = {
        **connection.settings_dict,
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "NAME": "ailuro",
        "OPTIONS": {"connect_timeout": 5},
    }
    wrapper = PostgresWrapper(settings_dict)
    return _raised(wrapper.ensure_connection)


def _syntax_error() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELEC 1")


def test_a_refused_connection_is_the_database_unavailable() -> None:
    error = _refused()
    assert isinstance(error, DatabaseError)
    assert unavailable_dependency(error) == DATABASE
    raw = _raised(lambda: psycopg.connect(f"host=127.0.0.1 port={free_port()} connect_timeout=5"))
    assert unavailable_dependency(raw) == DATABASE


def test_connecting_gives_up_within_seconds(postgres_only: None) -> None:
    """A host that drops packets is an OperationalError (a 503) in seconds, not a request held for
    minutes; `?connect_timeout=N` in DATABASE_URL overrides the default."""
    assert connection.settings_dict["OPTIONS"]["connect_timeout"] == 5


def test_bugs_are_not_an_outage() -> None:
    assert unavailable_dependency(_raised(_syntax_error)) is None
    assert unavailable_dependency(_raised(lambda: 1 / 0)) is None
    assert unavailable_dependency(_raised(lambda: {}["x"])) is None


def _past_a_statement_timeout() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(1)")


def test_a_statement_timeout_is_not_an_outage(postgres_only: None) -> None:
    error = _raised(_past_a_statement_timeout)
    assert isinstance(error.__cause__, psycopg.errors.QueryCanceled)
    assert unavailable_dependency(error) is None


def test_in_the_pilot_lane_a_statement_timeout_is_its_time_limit_the_database_missed(
    postgres_only: None, settings: Any
) -> None:
    settings.AILURO_WEB_ROLE = "pilot"
    assert unavailable_dependency(_raised(_past_a_statement_timeout)) == DATABASE
    assert unavailable_dependency(_raised(lambda: 1 / 0)) is None


def test_a_locked_sqlite_file_is_the_database_unavailable(tmp_path: Path) -> None:
    name = str(tmp_path / "locked.sqlite3")
    holder = sqlite3.connect(name, isolation_level=None)
    holder.execute("CREATE TABLE t (x int)")
    holder.execute("BEGIN IMMEDIATE")
    wrapper = SqliteWrapper({**connection.settings_dict, "NAME": name, "OPTIONS": {"timeout": 0}})
    try:

        def write() -> None:
            with wrapper.cursor() as cursor:
                cursor.execute("INSERT INTO t VALUES (1)")

        assert unavailable_dependency(_raised(write)) == DATABASE
        missing = _raised(lambda: wrapper.cursor().execute("SELECT * FROM no_such_table"))
        assert unavailable_dependency(missing) is None
    finally:
        wrapper.close()
        holder.close()


def test_an_unreachable_broker_is_the_broker_unavailable() -> None:
    from kombu import Connection

    url = f"redis://127.0.0.1:{free_port()}/0"
    with Connection(url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
        error = _raised(lambda: conn.ensure_connection(max_retries=0))
    assert unavailable_dependency(error) == BROKER


# --- Through the middleware: the answer of each interface ---------------------------------------


def _lost(request: HttpRequest) -> HttpResponse:
    raise _refused()


def _bug(request: HttpRequest) -> HttpResponse:
    _syntax_error()
    return HttpResponse("unreachable")


@pytest.fixture
def client(settings: Any) -> Client:
    urlpatterns = [
        path(prefix + name, view)
        for prefix in ("server/panda/", "api/v1/pilot/", "api/v1/system/", "api/v1/", "")
        for name, view in (("lost", _lost), ("bug", _bug))
    ]
    urlpatterns.append(path("server/panda/relay_idds_command", _lost))
    settings.ROOT_URLCONF = type(
        "urls", (), {"urlpatterns": urlpatterns, "handler500": "core.views.server_error"}
    )
    settings.AILURO_RETRY_AFTER_S = 3
    return Client(raise_request_exception=False)


def test_each_interface_answers_503_in_its_format(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    message = "the database is unavailable; retry in 3 s"
    with caplog.at_level(logging.WARNING):
        legacy = client.post("/server/panda/lost")
        v1 = client.post("/api/v1/pilot/lost")
        rest = client.get("/api/v1/lost")
        page = client.get("/lost")
        page_json = client.get("/lost?json")
        fragment = client.get("/lost", headers={"HX-Request": "true"})
        panda_client = client.post("/api/v1/system/lost")
        relay = client.post("/server/panda/relay_idds_command")

    for response in (legacy, v1, rest, page, page_json, fragment, panda_client, relay):
        assert response.status_code == 503
        assert response["Retry-After"] == "3"
    assert legacy.json() == {"StatusCode": 30, "errorDialog": message}
    assert v1.json() == {"success": False, "message": message, "data": None}
    assert rest.json() == {"detail": message}
    assert page["Content-Type"].startswith("text/html")
    assert "<h1>Service unavailable</h1>" in page.content.decode()
    assert page_json.json() == {"error": message}
    assert panda_client.json() == {"success": False, "message": message, "data": None}
    assert relay.json() == [False, message]
    assert fragment.content.decode() == '<p class="error">The database is unavailable; retry in 3 s.</p>'
    # One warning line per failed request, no traceback.
    warnings = [r for r in caplog.records if r.name == "core.unavailable"]
    assert len(warnings) == 8
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_programming_error_stays_a_500(client: Client) -> None:
    for url in ("/server/panda/bug", "/api/v1/bug", "/bug"):
        response = client.get(url)
        assert response.status_code == 500, url
        assert "Retry-After" not in response


class LostInMiddleware:
    """A middleware that meets the database outage itself (outside any view)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.endswith("/bug"):
            _syntax_error()
        raise _refused()


def test_an_outage_met_in_a_middleware_is_a_503_too(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.core.test_dependency_unavailable.LostInMiddleware"]

    with caplog.at_level(logging.WARNING):
        rest = client.get("/api/v1/anything")
        page = client.get("/anything")

    assert rest.status_code == 503
    assert rest["Retry-After"] == "3"
    assert rest.json() == {"detail": "the database is unavailable; retry in 3 s"}
    assert page.status_code == 503
    assert "<h1>Service unavailable</h1>" in page.content.decode()
    assert len([r for r in caplog.records if r.name == "core.unavailable"]) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert client.get("/api/v1/bug").status_code == 500
