"""POST /server/panda/relay_idds_command through Django: authentication, the command allowlist,
the attacks, and a captured BPS submission landing as an ailuro workflow."""

from __future__ import annotations

import gc
import gzip
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from core.services import token_create
from dispatcher.models import Job, JobDependency, Task, Workflow
from pandacompat.views import gc_paused
from tests.factories import QueueFactory, SiteFactory
from tests.pandacompat.payloads import (
    captured_envelope,
    envelope,
    gzip_body,
    idds_zip,
    submit_args,
    works,
)

pytestmark = pytest.mark.django_db

URL = "/server/panda/relay_idds_command"
MB = 1024 * 1024


def relay(client: Client, token: str | None, body: bytes, content_type: str = "application/json") -> Any:
    headers = {"HTTP_ORIGIN": "Rubin"}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.post(URL, data=body, content_type=content_type, **headers)


@pytest.fixture
def alice() -> str:
    return token_create(username="alice")


@pytest.fixture
def rubin_queues() -> None:
    site = SiteFactory(name="SLAC_Rubin")
    for name, rss, cores in (
        ("SLAC_Rubin", 8000, 1),
        ("SLAC_Rubin_Big", 32000, 4),
        ("SLAC_Rubin_Merge", 8000, 1),
    ):
        QueueFactory(name=name, site=site, max_rss_mb=rss, max_cores=cores, max_walltime_s=100_000)


def test_ping_answers_status_ok_as_bps_expects(client: Client, alice: str) -> None:
    sent = captured_envelope("bps_cli_ping_report_cancel_restart_status.jsonl", "ping")
    response = relay(client, alice, gzip_body(sent))
    assert response.status_code == 200
    assert response.json() == [True, {"Status": "OK"}]


def test_ping_as_a_form_works_too(client: Client, alice: str) -> None:
    response = relay(
        client, alice, urlencode({"command_name": "ping"}).encode(), "application/x-www-form-urlencoded"
    )
    assert response.json() == [True, {"Status": "OK"}]


def test_without_a_token_the_relay_answers_401(client: Client) -> None:
    response = relay(client, None, gzip_body(envelope("ping")))
    assert response.status_code == 401
    assert response.json()[0] is False


def test_an_unknown_token_is_401(client: Client) -> None:
    response = relay(client, "ail_not-a-token", gzip_body(envelope("ping")))
    assert response.status_code == 401


def test_a_pilot_token_may_not_use_the_relay(client: Client) -> None:
    pilot = token_create(username="pilots", role="pilot")
    response = relay(client, pilot, gzip_body(envelope("ping")))
    assert response.status_code == 403
    assert response.json()[0] is False


@pytest.mark.parametrize("command", ["submit+idds.example.org", "ping+evil.host"])
def test_command_plus_host_is_refused(client: Client, alice: str, command: str) -> None:
    response = relay(client, alice, gzip_body(envelope(command)))
    assert response.status_code == 400
    ok, message = response.json()
    assert ok is False and "host" in message


@pytest.mark.parametrize(
    "command", ["get_hyperparameters", "update_build_request", "__class__", "submit_build"]
)
def test_commands_outside_the_allowlist_are_refused(client: Client, alice: str, command: str) -> None:
    response = relay(client, alice, gzip_body(envelope(command, kwargs={"request_id": 1})))
    assert response.status_code == 400
    assert "not relayed" in response.json()[1]


def test_a_gzip_bomb_body_is_413(client: Client, alice: str, settings: Any) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "RELAY_MAX_DECODED_BYTES": 4 * MB}
    response = relay(client, alice, gzip.compress(b" " * (64 * MB), 9))
    assert response.status_code == 413
    assert response.json()[0] is False


def test_a_zlib_bomb_in_a_dependency_map_is_413_and_writes_nothing(
    client: Client, alice: str, settings: Any, rubin_queues: None
) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "RELAY_MAX_DECODED_BYTES": 8 * MB}
    args = submit_args()
    next(iter(works(args).values()))["attributes"]["_dependency_map"] = idds_zip(["x" * 1000] * 20_000)
    response = relay(client, alice, gzip_body(envelope("submit", args, {"username": None})))
    assert response.status_code == 413
    assert not Workflow.objects.exists()


def test_deep_nesting_is_400(client: Client, alice: str) -> None:
    body = gzip.compress(b'{"command_name": "submit", "args": "' + b"[" * 50_000 + b'"}')
    response = relay(client, alice, body)
    assert response.status_code == 400


def test_a_payload_naming_a_foreign_class_is_400_and_imports_nothing(
    client: Client, alice: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rubin_queues: None
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "ailuro_relay_marker_http.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = submit_args()
    next(iter(works(args).values()))["attributes"]["sandbox"] = {
        "class": "Workflow",
        "module": "ailuro_relay_marker_http",
        "attributes": {},
    }
    response = relay(client, alice, gzip_body(envelope("submit", args, {"username": None})))
    assert response.status_code == 400
    assert "ailuro_relay_marker_http.Workflow" in response.json()[1]
    assert not marker.exists()
    assert "ailuro_relay_marker_http" not in sys.modules
    assert not Workflow.objects.exists()


def test_a_captured_submission_becomes_a_workflow_of_the_authenticated_user(
    client: Client, alice: str, rubin_queues: None
) -> None:
    sent = captured_envelope("bps_direct_PanDAService.jsonl", "submit")
    sent["kwargs"] = json.dumps({"username": "mallory", "use_dataset_name": False})
    response = relay(client, alice, gzip_body(sent))
    assert response.status_code == 200, response.content
    ok, request_id = response.json()
    assert ok is True and isinstance(request_id, int)
    workflow = Workflow.objects.get(pk=request_id)
    assert (workflow.name, workflow.owner.username) == ("bps_test_wf", "alice")
    tasks = {t.label: t for t in Task.objects.filter(workflow=workflow)}
    assert sorted(tasks) == [
        "bps_test_wf_01_isr_01",
        "bps_test_wf_02_calibrate_01",
        "bps_test_wf_03_finalJob_01",
    ]
    calibrate = tasks["bps_test_wf_02_calibrate_01"]
    assert (calibrate.memory_mb, calibrate.cores, calibrate.walltime_s, calibrate.max_attempts) == (
        4096,
        2,
        1800,
        5,
    )
    assert calibrate.included_sites == ["SLAC_Rubin_Big"]
    assert calibrate.retry_policy == {"memory_retry_step_mb": 8192, "max_memory_mb": 16384}
    jobs = {j.name: j for j in Job.objects.filter(workflow=workflow)}
    assert sorted(jobs) == [
        "bps_test_wf_03_finalJob_01",
        "calibrate_903342_10",
        "isr_903342_10",
        "isr_903342_11",
    ]
    assert {j.produsername for j in jobs.values()} == {"alice"}
    assert "calibrate_903342_10+qgraphNodeId:bbbb-3333" in jobs["calibrate_903342_10"].command
    assert jobs["calibrate_903342_10"].data_id == {
        "qgraphNodeId": "bbbb-3333",
        "qgraphId": "1700000000.123-4567",
    }
    edges = set(
        JobDependency.objects.filter(child__workflow=workflow).values_list("parent__name", "child__name")
    )
    assert edges == {("isr_903342_10", "calibrate_903342_10")}
    # BPS's finalJob is an ailuro final job: no edges, it waits for every other job to end,
    # whatever the outcome.
    final = jobs["bps_test_wf_03_finalJob_01"]
    assert (final.is_final, final.pending_parents) == (True, 1)
    assert [j.name for j in jobs.values() if j.is_final] == ["bps_test_wf_03_finalJob_01"]
    assert workflow.final_jobs == 1
    assert [job for job in workflow.spec["jobs"] if job.get("final")] == [
        {
            "name": "bps_test_wf_03_finalJob_01",
            "label": "bps_test_wf_03_finalJob_01",
            "command": final.command,
            "final": True,
        }
    ]


def test_a_submission_for_a_queue_ailuro_lacks_is_refused_with_the_reason(client: Client, alice: str) -> None:
    QueueFactory(name="BNL_ATLAS", site=SiteFactory(name="BNL"), max_rss_mb=64000, max_cores=8)
    response = relay(client, alice, gzip_body(captured_envelope("bps_direct_PanDAService.jsonl", "submit")))
    assert response.status_code == 200
    ok, message = response.json()
    assert ok is False and "sites" in message
    assert not Workflow.objects.exists()


def test_a_reader_may_ping_but_not_submit(client: Client, rubin_queues: None) -> None:
    reader = token_create(username="rita", role="reader")
    assert relay(client, reader, gzip_body(envelope("ping"))).json() == [True, {"Status": "OK"}]
    response = relay(client, reader, gzip_body(captured_envelope("bps_direct_PanDAService.jsonl", "submit")))
    assert response.status_code == 403
    assert not Workflow.objects.exists()


def test_the_garbage_collector_is_on_again_after_each_relay_call(
    client: Client, alice: str, rubin_queues: None
) -> None:
    """A relay call runs with the cyclic collector paused (pandacompat.views.gc_paused): after a
    submission, and after a refused call, it is on again."""
    assert gc.isenabled()
    response = relay(client, alice, gzip_body(captured_envelope("bps_direct_PanDAService.jsonl", "submit")))
    assert response.status_code == 200 and response.json()[0] is True
    assert gc.isenabled()
    assert (
        relay(client, alice, gzip.compress(b'{"command_name": "submit", "args": "[1,"}')).status_code == 400
    )
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
