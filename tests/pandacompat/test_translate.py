"""BPS workflows as ailuro specs (pandacompat.translate), on the released client's own submissions."""

from __future__ import annotations

import pytest

from dispatcher.workflows import spec_parse
from pandacompat.decoding import Budget, IddsDependency, IddsJob, IddsWork, IddsWorkflow, workflow_decode
from pandacompat.translate import TranslateError, pseudo_name_split, workflow_to_spec
from tests.pandacompat.payloads import submit_args

ISR_10 = "isr_903342_10+qgraphNodeId:aaaa-1111+qgraphId:1700000000.123-4567"
ISR_11 = "isr_903342_11+qgraphNodeId:aaaa-2222+qgraphId:1700000000.123-4567"
CALIBRATE_10 = "calibrate_903342_10+qgraphNodeId:bbbb-3333+qgraphId:1700000000.123-4567"


def decoded(name: str = "bps_direct_PanDAService.jsonl", index: int = 0) -> IddsWorkflow:
    return workflow_decode(submit_args(name, index), budget=Budget(1 << 26, 1 << 26), max_depth=64)


def test_pseudo_names_split_into_the_bps_job_name_and_the_quantum_ids() -> None:
    assert pseudo_name_split(CALIBRATE_10) == (
        "calibrate_903342_10",
        {"qgraphNodeId": "bbbb-3333", "qgraphId": "1700000000.123-4567"},
    )
    assert pseudo_name_split("pure_pseudoinput+qgraphNodeId:+qgraphId:") == ("pure_pseudoinput", {})


def test_each_task_becomes_a_label_named_as_submitted_with_its_jobs() -> None:
    spec = workflow_to_spec(decoded()).spec
    assert spec["name"] == "bps_test_wf"
    assert [(j["name"], j["label"]) for j in spec["jobs"]] == [
        ("isr_903342_10", "bps_test_wf_01_isr_01"),
        ("isr_903342_11", "bps_test_wf_01_isr_01"),
        ("calibrate_903342_10", "bps_test_wf_02_calibrate_01"),
    ]
    calibrate = spec["jobs"][2]
    assert calibrate["depends_on"] == ["isr_903342_10"]
    assert calibrate["data_id"] == {"qgraphNodeId": "bbbb-3333", "qgraphId": "1700000000.123-4567"}


def test_the_pseudo_input_name_replaces_in_per_job_and_the_rest_of_the_command_is_kept() -> None:
    workflow = decoded()
    spec = workflow_to_spec(workflow).spec
    isr_exe = workflow.works[0].executable
    assert "${IN/L}" in isr_exe
    for job, pseudo in zip(spec["jobs"], [ISR_10, ISR_11, CALIBRATE_10], strict=True):
        assert "${IN/L}" not in job["command"]
        assert f" {pseudo} " in job["command"]
        assert "${CTRL_BPS_PANDA_DIR}" in job["command"]  # left for the worker's shell
    assert spec["jobs"][0]["command"] == isr_exe.replace("${IN/L}", ISR_10)


def test_per_task_resources_attempts_priority_queue_and_memory_retry_are_mapped() -> None:
    spec = workflow_to_spec(decoded()).spec
    assert spec["priority"] == 900  # the highest task priority, the final job's
    assert spec["labels"]["bps_test_wf_01_isr_01"] == {
        "resources": {"memory_mb": 2048, "cores": 1, "walltime_s": 600},
        "max_attempts": 3,
        "priority": 800,
        "sites": {"include": ["SLAC_Rubin"]},
        "retry_policy": {"memory_retry_step_mb": 4096, "max_memory_mb": 8192},
    }
    assert spec["labels"]["bps_test_wf_02_calibrate_01"] == {
        "resources": {"memory_mb": 4096, "cores": 2, "walltime_s": 1800},
        "max_attempts": 5,
        "priority": 850,
        "sites": {"include": ["SLAC_Rubin_Big"]},
        "retry_policy": {"memory_retry_step_mb": 8192, "max_memory_mb": 16384},
    }


def test_the_final_job_is_returned_apart_from_the_dag() -> None:
    translation = workflow_to_spec(decoded())
    assert "bps_test_wf_03_finalJob_01" not in {j["label"] for j in translation.spec["jobs"]}
    [final] = translation.final_jobs
    assert final["name"] == "bps_test_wf_03_finalJob_01"
    assert final["label"] == "bps_test_wf_03_finalJob_01"
    assert "final_job.bash" not in final["command"]  # the payload is hex-encoded for the decoder
    assert "pure_pseudoinput+qgraphNodeId:+qgraphId:" in final["command"]
    assert "depends_on" not in final
    assert "bps_test_wf_03_finalJob_01" not in translation.spec["labels"]
    assert translation.final_labels["bps_test_wf_03_finalJob_01"]["sites"] == {
        "include": ["SLAC_Rubin_Merge"]
    }


def test_the_spec_parses_into_the_same_dag() -> None:
    translation = workflow_to_spec(decoded())
    parsed = spec_parse(translation.spec, max_jobs=1000, max_edges=1000)
    by_name = {job.name: job for job in parsed.jobs}
    assert list(by_name["calibrate_903342_10"].parents) == ["isr_903342_10"]
    assert by_name["calibrate_903342_10"].memory_mb == 4096
    assert by_name["calibrate_903342_10"].cores == 2
    assert by_name["calibrate_903342_10"].priority == 850
    label = parsed.labels["bps_test_wf_02_calibrate_01"]
    assert (label.max_attempts, label.walltime_s, label.sites.include) == (5, 1800, ("SLAC_Rubin_Big",))
    assert label.retry_policy == {"memory_retry_step_mb": 8192, "max_memory_mb": 16384}


def test_the_submitcmd_workflow_translates_and_parses() -> None:
    translation = workflow_to_spec(decoded("bps_submitcmd_cli.jsonl"))
    parsed = spec_parse(translation.spec, max_jobs=1000, max_edges=1000)
    assert len(parsed.jobs) == 1
    assert "${IN/L}" not in parsed.jobs[0].command


def test_a_workflow_in_steps_needs_its_stored_maps() -> None:
    step = decoded("bps_direct_split_steps.jsonl", 0)
    main = decoded("bps_direct_split_steps.jsonl", 1)
    with pytest.raises(TranslateError, match="no step of this workflow carried it"):
        workflow_to_spec(main)
    whole = workflow_to_spec(main, stored_maps=step.step_maps)
    assert whole.spec["jobs"] == workflow_to_spec(decoded()).spec["jobs"]


def _work(task: str, *jobs: IddsJob, executable: str = "run ${IN/L}") -> IddsWork:
    return IddsWork(internal_id=task, task_name=task, executable=executable, jobs=jobs)


def test_a_dependency_on_a_job_the_workflow_lacks_is_named() -> None:
    orphan = IddsJob("b+qgraphNodeId:2", (IddsDependency(task="t1", inputname="missing+qgraphNodeId:9"),))
    workflow = IddsWorkflow(name="w", works=(_work("t1", IddsJob("a+qgraphNodeId:1")), _work("t2", orphan)))
    with pytest.raises(TranslateError, match="missing\\+qgraphNodeId:9"):
        workflow_to_spec(workflow)


def test_two_works_with_one_task_name_are_refused() -> None:
    workflow = IddsWorkflow(name="w", works=(_work("t1", IddsJob("a")), _work("t1", IddsJob("b"))))
    with pytest.raises(TranslateError, match="same task name"):
        workflow_to_spec(workflow)


def test_zero_or_missing_resources_are_left_to_ailuros_defaults() -> None:
    work = IddsWork(
        internal_id="t", task_name="t", executable="x", jobs=(IddsJob("a"),), rss_mb=0, core_count=0
    )
    spec = workflow_to_spec(IddsWorkflow(name="w", works=(work,))).spec
    assert "labels" not in spec
    assert spec["jobs"] == [{"name": "a", "label": "t", "command": "x"}]
