"""A prepared statement run with `SET LOCAL` settings (dispatch's ordered walk): the settings hold
for the statement and end with its transaction, whether that is the caller's or, outside one, a
transaction the statement opens, commits, or rolls back on an error."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DataError, ProgrammingError, connection, transaction

from dispatcher.services.prepared import fetch_prepared

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]
SETTINGS = "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"
READ = "SELECT current_setting('enable_sort'), current_setting('enable_bitmapscan'), %(x)s::int"


def _session() -> tuple[psycopg.pq.TransactionStatus, str]:
    raw = connection.connection
    assert raw is not None
    with connection.cursor() as cursor:
        status = raw.info.transaction_status
        cursor.execute("SHOW enable_sort")
        return status, cursor.fetchone()[0]


def test_outside_a_transaction_the_statement_runs_in_its_own_with_the_settings() -> None:
    assert fetch_prepared(READ, {"x": 1}, local_settings=SETTINGS) == [("off", "off", 1)]
    assert _session() == (psycopg.pq.TransactionStatus.IDLE, "on")
    # Its writes are committed: another connection sees them.
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE prepared_probe (x int)")
    try:
        insert = "INSERT INTO prepared_probe VALUES (%(x)s) RETURNING x"
        assert fetch_prepared(insert, {"x": 7}, local_settings=SETTINGS) == [(7,)]
        db = connection.settings_dict
        with psycopg.connect(
            host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"]
        ) as other:
            assert other.execute("SELECT x FROM prepared_probe").fetchall() == [(7,)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE prepared_probe")


def test_an_error_rolls_its_transaction_back_and_leaves_the_connection_usable() -> None:
    with pytest.raises(DataError):
        fetch_prepared("SELECT 1 / %(x)s::int", {"x": 0}, local_settings=SETTINGS)
    assert _session() == (psycopg.pq.TransactionStatus.IDLE, "on")
    assert fetch_prepared(READ, {"x": 2}) == [("on", "on", 2)]


def test_a_setting_refused_rolls_back_the_transaction_its_begin_opened() -> None:
    with pytest.raises(ProgrammingError):
        fetch_prepared(READ, {"x": 5}, local_settings="SET LOCAL no_such_setting = 1")
    assert _session() == (psycopg.pq.TransactionStatus.IDLE, "on")
    assert fetch_prepared(READ, {"x": 6}, local_settings=SETTINGS) == [("off", "off", 6)]


def test_in_the_callers_transaction_the_settings_end_with_it() -> None:
    with transaction.atomic():
        assert fetch_prepared(READ, {"x": 3}, local_settings=SETTINGS) == [("off", "off", 3)]
        # Still the caller's transaction: no COMMIT was sent from inside it.
        assert _session() == (psycopg.pq.TransactionStatus.INTRANS, "off")
    assert _session() == (psycopg.pq.TransactionStatus.IDLE, "on")


def test_a_transaction_begun_without_atomic_stays_the_callers() -> None:
    transaction.set_autocommit(False)
    try:
        assert fetch_prepared(READ, {"x": 4}, local_settings=SETTINGS) == [("off", "off", 4)]
        assert _session() == (psycopg.pq.TransactionStatus.INTRANS, "off")
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert _session() == (psycopg.pq.TransactionStatus.IDLE, "on")
