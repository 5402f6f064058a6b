"""Message templates: the same masking in Python and in PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection

from pandamon.errortext import message_template
from pandamon.queries import template_expression

SAMPLES = [
    ("Lost heartbeat from wn12.cern.ch after 7200 s", "Lost heartbeat from * after * s"),
    ("Stage-in failed: /data/raw/visit_0042.fits not found", "Stage-in failed: * not found"),
    ("Payload killed: RSS 4123456 kB above limit", "Payload killed: RSS * kB above limit"),
    ("Segmentation fault at 0x7f3a9c12 in libafw.so", "Segmentation fault at * in libafw.so"),
    ("job_42 exited with 137 (50%)", "* exited with * (*%)"),
    ("no digits here at all", "no digits here at all"),
    ("", ""),
]


@pytest.mark.parametrize(("message", "template"), SAMPLES)
def test_variable_parts_are_masked_so_messages_group(message: str, template: str) -> None:
    assert message_template(message) == template


@pytest.mark.django_db
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the PostgreSQL masking (SQLite masks in Python)"
)
def test_postgresql_masks_exactly_as_python_does() -> None:
    sql, params = template_expression("%s")
    with connection.cursor() as cursor:
        for message, _ in SAMPLES:
            # The column placeholder comes first, then the pattern parameters.
            cursor.execute(f"SELECT {sql}", [message, *params])  # noqa: S608
            assert cursor.fetchone()[0] == message_template(message)
