"""What a payload of `ailuro pilot` finds in its environment (ailuro.pilot.pilot.payload_environment)."""

from __future__ import annotations

from ailuro.pilot.pilot import payload_environment


def test_panda_client_code_in_the_payload_is_pointed_at_the_pilots_server() -> None:
    env = payload_environment("https://ailuro.example.org/", {"PATH": "/usr/bin"}, {"FOO": "1"})
    assert env == {
        "PANDA_SERVER_URL": "https://ailuro.example.org",
        "PANDACACHE_URL": "https://ailuro.example.org/server/panda",
        "PANDA_BEHIND_REAL_LB": "1",
        "PATH": "/usr/bin",
        "FOO": "1",
    }


def test_the_node_and_then_the_job_keep_their_own_values() -> None:
    env = payload_environment(
        "http://127.0.0.1:8000",
        {"PANDACACHE_URL": "https://internal:8443/server/panda", "X": "node"},
        {"X": "job"},
    )
    assert env["PANDACACHE_URL"] == "https://internal:8443/server/panda"
    assert env["PANDA_SERVER_URL"] == "http://127.0.0.1:8000"
    assert env["X"] == "job"
