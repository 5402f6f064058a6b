"""Safe decoding of relay bodies and iDDS workflow trees (pandacompat.decoding), without a database."""

from __future__ import annotations

import base64
import gzip
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from pandacompat.decoding import (
    Budget,
    DecodeError,
    body_decode,
    inflate_bounded,
    relay_call_parse,
    walk_plain,
    workflow_decode,
)
from tests.pandacompat.payloads import (
    captured_envelope,
    envelope,
    gzip_body,
    idds_zip,
    submit_args,
    template,
    works,
)

MB = 1024 * 1024


def budget(limit: int = 64 * MB) -> Budget:
    return Budget(remaining=limit, limit=limit)


def test_a_gzip_body_without_content_encoding_is_recognised_by_its_magic_bytes() -> None:
    sent = captured_envelope("bps_direct_PanDAService.jsonl", "ping")
    assert body_decode(gzip_body(sent), budget=budget()) == sent


def test_a_form_body_gives_the_same_envelope() -> None:
    form = urlencode({"command_name": "get_requests", "kwargs": json.dumps({"request_id": "7"})}).encode()
    call = relay_call_parse(body_decode(form, budget=budget()), max_depth=16)
    assert (call.command, call.args, call.kwargs) == ("get_requests", [], {"request_id": "7"})


def test_a_plain_json_body_is_read_too() -> None:
    call = relay_call_parse(body_decode(b'{"command_name": "ping"}', budget=budget()), max_depth=16)
    assert call.command == "ping"


def test_a_gzip_bomb_body_is_refused_with_413_before_it_is_inflated() -> None:
    bomb = gzip.compress(b"\0" * (64 * MB), compresslevel=9)  # 64 MB of zeros in ~64 KB
    started = time.monotonic()
    with pytest.raises(DecodeError) as refused:
        body_decode(bomb, budget=budget(8 * MB))
    assert refused.value.status == 413
    assert "gzip body" in refused.value.message
    assert time.monotonic() - started < 1.0


def test_inflating_stops_at_the_budget_not_at_the_end_of_the_data() -> None:
    spent = budget(2 * MB)
    with pytest.raises(DecodeError):
        inflate_bounded(zlib.compress(b"x" * (64 * MB)), wbits=zlib.MAX_WBITS, budget=spent, what="data")
    assert spent.remaining >= 0


def test_truncated_or_corrupt_gzip_is_a_400() -> None:
    good = gzip_body({"command_name": "ping"})
    for bad in (good[: len(good) // 2], good[:10] + b"\xff" * 20):
        with pytest.raises(DecodeError) as refused:
            body_decode(bad, budget=budget())
        assert refused.value.status == 400


@pytest.mark.parametrize("command", ["submit+idds.example.org", "ping+127.0.0.1:8443", "get_requests+evil"])
def test_a_command_naming_a_host_is_refused(command: str) -> None:
    with pytest.raises(DecodeError, match="names a host"):
        relay_call_parse({"command_name": command}, max_depth=16)


@pytest.mark.parametrize("command", ["", "../x", "a b", "x" * 65, None, 3])
def test_a_command_that_is_not_a_name_is_refused(command: Any) -> None:
    with pytest.raises(DecodeError):
        relay_call_parse({"command_name": command}, max_depth=16)


def test_deep_nesting_in_args_is_a_400_not_a_recursion_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DecodeError, match="deeper") as refused:
        relay_call_parse({"command_name": "submit", "args": deep}, max_depth=64)
    assert refused.value.status == 400


def test_deep_nesting_inside_an_idds_zip_field_is_a_400() -> None:
    nested: Any = []
    for _ in range(80):
        nested = [nested]
    with pytest.raises(DecodeError, match="deeper"):
        walk_plain({"x": idds_zip(nested)}, budget=budget(), max_depth=64)


def test_the_captured_submission_decodes_into_its_three_tasks() -> None:
    workflow = workflow_decode(submit_args(), budget=budget(), max_depth=64)
    assert workflow.name == "bps_test_wf"
    assert [w.task_name for w in workflow.works] == [
        "bps_test_wf_01_isr_01",
        "bps_test_wf_02_calibrate_01",
        "bps_test_wf_03_finalJob_01",
    ]
    calibrate = workflow.works[1]
    assert (calibrate.queue, calibrate.site, calibrate.core_count, calibrate.max_walltime_s) == (
        "SLAC_Rubin_Big",
        "SLAC_Rubin",
        2,
        1800,
    )
    assert (calibrate.rss_mb, calibrate.rss_max_mb, calibrate.rss_retry_step_mb) == (4096, 16384, 8192)
    assert (calibrate.max_attempt, calibrate.priority) == (5, 850)
    assert calibrate.jobs is not None
    [job] = calibrate.jobs
    assert job.name == "calibrate_903342_10+qgraphNodeId:bbbb-3333+qgraphId:1700000000.123-4567"
    assert [(d.task, d.inputname) for d in job.dependencies] == [
        ("bps_test_wf_01_isr_01", "isr_903342_10+qgraphNodeId:aaaa-1111+qgraphId:1700000000.123-4567")
    ]
    final = workflow.works[2]
    assert workflow.final_work_ids == {final.internal_id}
    assert not workflow.is_step and not workflow.with_steps


def test_a_step_and_its_main_workflow_decode() -> None:
    step = workflow_decode(submit_args("bps_direct_split_steps.jsonl", 0), budget=budget(), max_depth=64)
    main = workflow_decode(submit_args("bps_direct_split_steps.jsonl", 1), budget=budget(), max_depth=64)
    assert step.is_step and not step.works
    assert sorted(step.step_maps) == [
        "bps_test_wf_01_isr_01",
        "bps_test_wf_02_calibrate_01",
        "bps_test_wf_03_finalJob_01",
    ]
    assert main.with_steps
    assert all(w.jobs is None and w.map_file for w in main.works)


# --- classes named in the payload ------------------------------------------------------------

MARKER_MODULE = "ailuro_relay_marker"


@pytest.fixture
def marker_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path that writes a file if it is ever imported, and another if its class is
    ever constructed: the proof that the decoder imports and builds nothing."""
    marker = tmp_path / "imported"
    (tmp_path / f"{MARKER_MODULE}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "class Workflow:\n"
        "    def __init__(self, *a, **k):\n"
        f"        Path({str(marker)!r} + '.constructed').write_text('constructed')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MARKER_MODULE, None)
    return marker


@pytest.mark.parametrize(
    ("module", "cls"),
    [
        (MARKER_MODULE, "Workflow"),  # an allowed class name from another module
        (MARKER_MODULE, "Evil"),
        ("threading", "Thread"),
        ("idds.workflowv2.workflow", "Thread"),  # an iDDS module, a class not on the list
    ],
)
def test_an_object_naming_another_module_or_class_is_refused_and_nothing_is_imported(
    marker_module: Path, module: str, cls: str
) -> None:
    args = submit_args()
    work = next(iter(works(args).values()))
    work["attributes"]["task_log"] = {"class": cls, "module": module, "attributes": {"name": "x"}}
    with pytest.raises(DecodeError, match="not an iDDS workflow class") as refused:
        workflow_decode(args, budget=budget(), max_depth=64)
    assert refused.value.status == 400
    assert not marker_module.exists()
    assert not Path(f"{marker_module}.constructed").exists()
    assert MARKER_MODULE not in sys.modules


def test_a_foreign_class_hidden_in_an_idds_zip_field_is_refused(marker_module: Path) -> None:
    args = submit_args()
    work = next(iter(works(args).values()))
    work["attributes"]["_dependency_map"] = idds_zip(
        [{"name": "a", "dependencies": [{"class": "Workflow", "module": MARKER_MODULE, "attributes": {}}]}]
    )
    with pytest.raises(DecodeError, match="not an iDDS workflow class"):
        workflow_decode(args, budget=budget(), max_depth=64)
    assert not marker_module.exists()


def test_the_top_object_must_be_an_idds_workflow() -> None:
    with pytest.raises(DecodeError, match="Workflow"):
        workflow_decode([{"class": "Collection", "module": "idds.workflowv2.work", "attributes": {}}],
                        budget=budget(), max_depth=64)  # fmt: skip


def test_an_object_with_extra_keys_is_refused() -> None:
    with pytest.raises(DecodeError, match="exactly"):
        walk_plain(
            {"class": "Workflow", "module": "idds.workflowv2.workflow", "attributes": {}, "init": "x"},
            budget=budget(),
            max_depth=16,
        )


def test_a_zlib_bomb_inside_idds_zip_is_refused_with_413_fast() -> None:
    args = submit_args()
    work = next(iter(works(args).values()))
    bomb = zlib.compress(b"[" + b" " * (64 * MB) + b"]", 9)  # 64 MB of JSON in ~64 KB
    work["attributes"]["_dependency_map"] = "idds_zip:" + base64.b64encode(bomb).decode()
    started = time.monotonic()
    with pytest.raises(DecodeError) as refused:
        workflow_decode(args, budget=budget(16 * MB), max_depth=64)
    assert refused.value.status == 413
    assert "idds_zip" in refused.value.message
    assert time.monotonic() - started < 1.0


def test_base64_longer_than_the_budget_is_refused_before_it_is_decoded() -> None:
    text = "idds_zip:" + "A" * (4 * MB)
    with pytest.raises(DecodeError) as refused:
        walk_plain({"x": text}, budget=budget(1 * MB), max_depth=16)
    assert refused.value.status == 413


def test_the_budget_is_shared_by_every_idds_zip_field_of_a_request() -> None:
    one = idds_zip(["x" * 1000] * 400)  # ~400 KB each once inflated
    with pytest.raises(DecodeError) as refused:
        walk_plain({"a": one, "b": one, "c": one}, budget=budget(1 * MB), max_depth=16)
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task_rss", [4096], "task_rss has the wrong type"),
        ("core_count", True, "core_count has the wrong type"),
        ("task_name", None, "no task_name"),
        ("_dependency_map", idds_zip([{"dependencies": []}]), "must be a job with a name"),
        ("_dependency_map", idds_zip([{"name": "a", "dependencies": [{"task": 1}]}]), "must name a task"),
    ],
)
def test_fields_of_the_wrong_type_are_named(field: str, value: Any, message: str) -> None:
    args = submit_args()
    work = next(iter(works(args).values()))
    work["attributes"][field] = value
    with pytest.raises(DecodeError, match=message):
        workflow_decode(args, budget=budget(), max_depth=64)


def test_conditions_other_than_is_terminated_are_refused() -> None:
    args = submit_args()
    condition = next(iter(template(args)["_conditions"].values()))
    condition["attributes"]["_conditions"] = [{"idds_method": "is_finished", "idds_method_internal_id": "x"}]
    with pytest.raises(DecodeError, match="is_terminated"):
        workflow_decode(args, budget=budget(), max_depth=64)


def test_submit_takes_exactly_one_workflow() -> None:
    with pytest.raises(DecodeError, match="one argument"):
        workflow_decode([], budget=budget(), max_depth=64)


def test_ping_envelope_from_the_helper_round_trips() -> None:
    call = relay_call_parse(body_decode(gzip_body(envelope("ping")), budget=budget()), max_depth=16)
    assert (call.command, call.args, call.kwargs) == ("ping", [], {})


def test_numbers_sent_as_text_are_read_as_numbers() -> None:
    """GenericWorkflowJob.request_walltime is a string; ctrl_bps_panda sends it on as maxWalltime."""
    args = submit_args()
    work = next(iter(works(args).values()))
    work["attributes"].update({"maxWalltime": "600", "task_rss": "2048.0", "core_count": "2"})
    first = workflow_decode(args, budget=budget(), max_depth=64).works[0]
    assert (first.max_walltime_s, first.rss_mb, first.core_count) == (600, 2048.0, 2)
    work["attributes"]["maxWalltime"] = "10 minutes"
    with pytest.raises(DecodeError, match="maxWalltime must be a number"):
        workflow_decode(args, budget=budget(), max_depth=64)
