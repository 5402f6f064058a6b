from __future__ import annotations

import json
import logging

from core.logging import RedactSecretsFilter, redact


def test_tokens_and_authorization_headers_are_masked() -> None:
    assert "sekrit" not in redact("Authorization: Bearer sekrit.jwt.value")
    assert "ail_abcdefghijkl" not in redact("token ail_abcdefghijklmnop used")
    assert redact("nothing secret here") == "nothing secret here"


def test_log_lines_are_json_with_ids(capsys: object) -> None:
    from pythonjsonlogger.json import JsonFormatter

    record = logging.LogRecord("dispatcher", logging.INFO, __file__, 1, "job %s: Bearer abc.def", (7,), None)
    record.pandaid = 7
    assert RedactSecretsFilter().filter(record)
    line = JsonFormatter("%(levelname)s %(name)s %(message)s").format(record)
    data = json.loads(line)
    assert data["pandaid"] == 7
    assert "abc.def" not in data["message"]
