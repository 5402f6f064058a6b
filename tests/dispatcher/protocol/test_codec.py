"""The pure decoding helpers."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest

from dispatcher.protocol.codec import ProtocolError, as_bool, as_float, as_int, as_time, decode_body

UTC = dt.UTC


def test_gzip_json_without_content_encoding_is_recognised_by_its_magic() -> None:
    body = gzip.compress(b'{"a": 1}')
    assert decode_body(body, content_type="application/json", content_encoding="") == {"a": 1}


def test_form_values_stay_strings_and_keep_blanks() -> None:
    got = decode_body(
        b"a=1&b=&c=False", content_type="application/x-www-form-urlencoded", content_encoding=""
    )
    assert got == {"a": "1", "b": "", "c": "False"}


def test_numbers_arrive_as_strings_or_typed() -> None:
    assert as_int({"n": "1000"}, "n") == as_int({"n": 1000}, "n") == as_int({"n": "1000.0"}, "n") == 1000
    assert as_float({"x": "24105.56"}, "x") == 24105.56
    assert as_int({"n": ""}, "n", default=5) == 5
    assert as_int({"n": "NULL"}, "n") is None


def test_booleans_arrive_as_python_strings_or_json() -> None:
    assert as_bool({"b": "False"}, "b") is False and as_bool({"b": True}, "b") is True
    with pytest.raises(ProtocolError, match="true or false"):
        as_bool({"b": "maybe"}, "b")


@pytest.mark.parametrize(
    "value",
    [1795310990.29, "1795310990.29", "2026-11-22 01:29:50.290000", "2026-11-22T01:29:50.29+00:00"],
)
def test_times_arrive_as_epoch_floats_strings_or_formatted(value: object) -> None:
    got = as_time({"t": value}, "t")
    assert got is not None
    assert got.replace(microsecond=0) == dt.datetime(2026, 11, 22, 1, 29, 50, tzinfo=UTC)


def test_a_naive_formatted_time_is_utc() -> None:
    assert as_time({"t": "2026-01-01 00:00:00"}, "t") == dt.datetime(2026, 1, 1, tzinfo=UTC)


def test_the_first_present_name_wins() -> None:
    assert as_int({"attempt_nr": 2}, "attemptNr", "attempt_nr") == 2
