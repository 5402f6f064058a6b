"""The benchmarks empty or drop only databases a benchmark created: a mistyped --db must not wipe a
real one (bench/_common.py `database_claim`, used by dispatch, monitor and ingest)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _common import NotScratch, database_claim  # noqa: E402  (bench/ is a folder of scripts)

pytestmark = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL"
)


def _admin_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/postgres"


@pytest.fixture
def name() -> Iterator[str]:
    name = f"ailuro_benchclaim_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _rows(name: str) -> list[tuple[int]]:
    url = _admin_url().rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute("SELECT n FROM keep ORDER BY n").fetchall()]


def _make_table(name: str) -> None:
    url = _admin_url().rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep (n int)")
        conn.execute("INSERT INTO keep VALUES (1), (2)")


def test_a_database_the_benchmark_did_not_create_is_refused_and_left_alone(name: str) -> None:
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _make_table(name)
    for drop in (False, True):
        with pytest.raises(NotScratch, match=f"database {name} exists and was not created by a benchmark"):
            database_claim(_admin_url(), name, drop=drop)
    assert _rows(name) == [(1,), (2,)]


def test_a_scratch_database_is_created_marked_reused_and_dropped_on_request(name: str) -> None:
    assert database_claim(_admin_url(), name) is True
    _make_table(name)
    assert database_claim(_admin_url(), name) is False  # reused as it is
    assert _rows(name) == [(1,), (2,)]
    assert database_claim(_admin_url(), name, drop=True) is True  # afresh
    with pytest.raises(psycopg.errors.UndefinedTable):
        _rows(name)
