"""The relay commands after submit: `get_requests` (bps report / status / list),
`get_status` (panda_auth), `get_contents_output_ext` (report's exit codes), `abort` (bps
cancel), `retry` (bps restart), and a submission sent in steps — through Django, on a captured
BPS workflow whose jobs are run by stand-in pilots (tests/campaigns/pilots.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from core.services import token_create
from dispatcher.loops import rollup_one_batch
from dispatcher.models import Job, JobDependency, Workflow
from pandacompat.models import WorkflowStep
from tests.campaigns.pilots import OK, Outcome, pilots_run
from tests.factories import QueueFactory, SiteFactory
from tests.pandacompat.payloads import captured_envelope, envelope, gzip_body
from tests.pandacompat.test_relay import relay

pytestmark = pytest.mark.django_db

FAIL: Outcome = ("failed", {"transexitcode": 3, "exeerrorcode": 3, "exeerrordiag": "payload exit 3"})


@pytest.fixture
def alice() -> str:
    return token_create(username="alice")


@pytest.fixture(autouse=True)
def rubin_queues() -> None:
    site = SiteFactory(name="SLAC_Rubin")
    for name, rss, cores in (
        ("SLAC_Rubin", 8000, 1),
        ("SLAC_Rubin_Big", 32000, 4),
        ("SLAC_Rubin_Merge", 8000, 1),
    ):
        QueueFactory(name=name, site=site, max_rss_mb=rss, max_cores=cores, max_walltime_s=100_000)


def call(client: Client, token: str, command: str, **kwargs: Any) -> tuple[int, Any]:
    response = relay(client, token, gzip_body(envelope(command, kwargs=kwargs)))
    return response.status_code, response.json()


def submitted(client: Client, token: str) -> int:
    response = relay(client, token, gzip_body(captured_envelope("bps_direct_PanDAService.jsonl", "submit")))
    ok, request_id = response.json()
    assert ok is True, request_id
    return int(request_id)


def run_with_isr_10_failing(request_id: int) -> None:
    pilots_run(
        queue="SLAC_Rubin",
        workflow_ids=[request_id],
        outcome=lambda job: FAIL if job.name == "isr_903342_10" else OK,
    )
    rollup_one_batch()


def enum(cls: str, name: str, value: int) -> dict[str, Any]:
    return {
        "class": cls,
        "module": "idds.common.constants",
        "attributes": {"_value_": value, "_name_": name, "_sort_order_": value},
    }


def test_get_requests_with_detail_has_a_row_per_task_counted_as_bps_report_reads_them(
    client: Client, alice: str
) -> None:
    request_id = submitted(client, alice)
    status, (ok, rows) = call(client, alice, "get_requests", request_id=str(request_id), with_detail=True)
    assert (status, ok) == (200, True)
    assert [r["transform_name"] for r in rows] == [
        "bps_test_wf_01_isr_01",
        "bps_test_wf_02_calibrate_01",
        "bps_test_wf_03_finalJob_01",
    ]
    head = rows[0]
    assert (head["request_id"], head["username"], head["name"]) == (request_id, "alice", "bps_test_wf")
    assert head["status"] == enum("RequestStatus", "Transforming", 2)
    isr = rows[0]
    assert isr["transform_workload_id"] == isr["transform_id"]
    assert (isr["output_total_files"], isr["output_new_files"], isr["input_new_files"]) == (2, 2, 2)

    run_with_isr_10_failing(request_id)
    _, (_, rows) = call(client, alice, "get_requests", request_id=request_id, with_detail=True)
    by_name = {r["transform_name"]: r for r in rows}
    counters = [
        "output_total_files",
        "output_processed_files",
        "output_processing_files",
        "output_failed_files",
        "output_missing_files",
        "output_new_files",
        "input_new_files",
    ]
    assert [by_name["bps_test_wf_01_isr_01"][c] for c in counters] == [2, 1, 0, 1, 0, 0, 0]
    assert [by_name["bps_test_wf_02_calibrate_01"][c] for c in counters] == [1, 0, 0, 0, 1, 0, 0]
    assert [by_name["bps_test_wf_03_finalJob_01"][c] for c in counters] == [1, 1, 0, 0, 0, 0, 0]
    assert by_name["bps_test_wf_01_isr_01"]["transform_status"] == enum("TransformStatus", "SubFinished", 4)
    assert by_name["bps_test_wf_02_calibrate_01"]["transform_status"]["attributes"]["_name_"] == "Failed"
    assert rows[0]["status"]["attributes"]["_name_"] == "SubFinished"
    # The same numbers as ailuro's own: jobs per state in the workflow.
    assert sum(r["output_failed_files"] for r in rows) == Job.objects.filter(jobstatus="failed").count()
    assert sum(r["output_missing_files"] for r in rows) == Job.objects.filter(jobstatus="pruned").count()


def test_get_requests_without_detail_and_without_an_id(client: Client, alice: str) -> None:
    request_id = submitted(client, alice)
    _, (ok, rows) = call(client, alice, "get_requests", request_id=request_id, with_detail=False)
    assert ok is True and len(rows) == 1 and "transform_id" not in rows[0]
    _, (ok, rows) = call(client, alice, "get_requests", request_id=str(request_id))
    assert [r["request_id"] for r in rows] == [request_id]
    _, (ok, rows) = call(client, alice, "get_requests")
    assert [r["request_id"] for r in rows] == [request_id]
    bob = token_create(username="bob")
    _, (ok, rows) = call(client, bob, "get_requests")
    assert (ok, rows) == (True, [])


def test_a_bad_or_unknown_request_id(client: Client, alice: str) -> None:
    status, (ok, message) = call(client, alice, "get_requests", request_id="12abc", with_detail=True)
    assert (status, ok) == (200, False) and "'12abc'" in message
    assert call(client, alice, "get_requests", request_id="999999", with_detail=True)[1] == [True, []]
    assert call(client, alice, "abort", request_id="999999")[1] == [False, "no request 999999"]
    assert call(client, alice, "get_requests", request_id=1, with_detail="yes")[1][0] is False


def test_get_status_answers_panda_auth_and_a_workflow(client: Client, alice: str) -> None:
    _, (ok, result) = call(client, alice, "get_status", request_id=0, with_detail=False)
    assert ok is True and "request_id" in result and "status" in result
    request_id = submitted(client, alice)
    _, (ok, result) = call(client, alice, "get_status", request_id=str(request_id), with_detail=False)
    assert (result["request_id"], result["status"]) == (request_id, "Transforming")


def test_get_contents_output_ext_has_the_failed_jobs_exit_codes(client: Client, alice: str) -> None:
    request_id = submitted(client, alice)
    run_with_isr_10_failing(request_id)
    _, (_, rows) = call(client, alice, "get_requests", request_id=request_id, with_detail=True)
    isr = next(r for r in rows if r["transform_name"].endswith("_isr_01"))
    _, (ok, result) = call(
        client,
        alice,
        "get_contents_output_ext",
        workload_id=isr["transform_workload_id"],
        request_id=str(request_id),
    )
    assert ok is True and list(result) == [str(isr["transform_workload_id"])]
    failed = Job.objects.get(name="isr_903342_10")
    [entry] = result[str(isr["transform_workload_id"])]
    assert (entry["panda_id"], entry["trans_exit_code"], entry["attempt_nr"]) == (
        failed.pk,
        3,
        failed.attemptnr,
    )
    _, (ok, message) = call(
        client, alice, "get_contents_output_ext", workload_id=10**9, request_id=request_id
    )
    assert ok is False and "no workload" in message


def test_retry_reruns_the_failed_job_and_its_pruned_descendants_only(client: Client, alice: str) -> None:
    request_id = submitted(client, alice)
    run_with_isr_10_failing(request_id)
    before = {j.name: (j.jobstatus, j.attemptnr) for j in Job.objects.filter(workflow_id=request_id)}
    bob = token_create(username="bob")
    status, (ok, message) = call(client, bob, "retry", request_id=str(request_id))
    assert (status, ok) == (403, False) and "another user" in message
    status, (ok, result) = call(client, alice, "retry", request_id=str(request_id))
    assert (status, ok) == (200, True)
    after = {j.name: (j.jobstatus, j.attemptnr) for j in Job.objects.filter(workflow_id=request_id)}
    assert after["isr_903342_11"] == before["isr_903342_11"] == ("finished", 1)
    assert after["isr_903342_10"] == ("defined", before["isr_903342_10"][1] + 1)
    assert after["calibrate_903342_10"][0] == "defined"
    assert result == {"retried": 1, "unpruned": 1}
    # BPS's finalJob ran after the failure (an ailuro final job) and waits to run again.
    assert before["bps_test_wf_03_finalJob_01"] == ("finished", 1)
    assert after["bps_test_wf_03_finalJob_01"] == ("defined", 2)
    pilots_run(queue="SLAC_Rubin", workflow_ids=[request_id])
    rollup_one_batch()
    _, (_, rows) = call(client, alice, "get_requests", request_id=request_id, with_detail=False)
    assert rows[0]["status"]["attributes"]["_name_"] == "Finished"


def test_abort_cancels_the_workflow_for_its_owner_or_an_operator_only(client: Client, alice: str) -> None:
    request_id = submitted(client, alice)
    status, (ok, _) = call(client, token_create(username="bob"), "abort", request_id=request_id)
    assert (status, ok) == (403, False)
    assert Workflow.objects.get(pk=request_id).status != "cancelled"
    operator = token_create(username="olga", role="operator")
    status, (ok, result) = call(client, operator, "abort", request_id=str(request_id))
    assert (status, ok, result) == (200, True, {"cancelled": 4})
    _, (_, rows) = call(client, alice, "get_requests", request_id=request_id, with_detail=True)
    assert rows[0]["status"]["attributes"]["_name_"] == "Cancelled"
    assert {r["transform_status"]["attributes"]["_name_"] for r in rows} == {"Cancelled"}
    assert {r["output_missing_files"] for r in rows} == {2, 1} and sum(
        r["output_total_files"] for r in rows
    ) == 4


# --- submissions sent in steps -----------------------------------------------------------------


def test_a_workflow_sent_in_steps_is_submitted_from_its_stored_steps(client: Client, alice: str) -> None:
    step = captured_envelope("bps_direct_split_steps.jsonl", "submit", 0)
    main = captured_envelope("bps_direct_split_steps.jsonl", "submit", 1)
    assert relay(client, alice, gzip_body(step)).json() == [True, 0]
    assert not Workflow.objects.exists()
    stored = set(WorkflowStep.objects.values_list("owner__username", "task_name"))
    assert stored == {
        ("alice", "bps_test_wf_01_isr_01"),
        ("alice", "bps_test_wf_02_calibrate_01"),
        ("alice", "bps_test_wf_03_finalJob_01"),
    }
    ok, request_id = relay(client, alice, gzip_body(main)).json()
    assert ok is True, request_id
    workflow = Workflow.objects.get(pk=request_id)
    assert sorted(Job.objects.filter(workflow=workflow).values_list("name", flat=True)) == [
        "bps_test_wf_03_finalJob_01",
        "calibrate_903342_10",
        "isr_903342_10",
        "isr_903342_11",
    ]
    assert ("isr_903342_10", "calibrate_903342_10") in set(
        JobDependency.objects.filter(child__workflow=workflow).values_list("parent__name", "child__name")
    )
    assert not WorkflowStep.objects.exists()


def test_a_main_workflow_without_its_steps_is_refused_naming_them(client: Client, alice: str) -> None:
    step = captured_envelope("bps_direct_split_steps.jsonl", "submit", 0)
    main = captured_envelope("bps_direct_split_steps.jsonl", "submit", 1)
    # Another user's steps are not this user's.
    assert relay(client, token_create(username="bob"), gzip_body(step)).json() == [True, 0]
    ok, message = relay(client, alice, gzip_body(main)).json()
    assert ok is False
    assert "bps_test_wf_01_isr_01" in message and "bps_test_wf_02_calibrate_01" in message
    assert not Workflow.objects.exists()
    assert WorkflowStep.objects.count() == 3


def test_expired_steps_are_not_used_and_are_deleted_by_the_next_store(client: Client, alice: str) -> None:
    step = captured_envelope("bps_direct_split_steps.jsonl", "submit", 0)
    main = captured_envelope("bps_direct_split_steps.jsonl", "submit", 1)
    assert relay(client, alice, gzip_body(step)).json() == [True, 0]
    WorkflowStep.objects.update(created=timezone.now() - dt.timedelta(days=2))
    assert relay(client, alice, gzip_body(main)).json()[0] is False
    bob = token_create(username="bob")
    assert relay(client, bob, gzip_body(step)).json() == [True, 0]
    assert set(WorkflowStep.objects.values_list("owner__username", flat=True)) == {"bob"}


def test_steps_over_the_job_cap_are_413(client: Client, alice: str, settings: Any) -> None:
    settings.AILURO = {**settings.AILURO, "MAX_DAG_JOBS": 3}
    step = captured_envelope("bps_direct_split_steps.jsonl", "submit", 0)
    response = relay(client, alice, gzip_body(step))
    assert response.status_code == 413
    assert "MAX_DAG_JOBS" in response.json()[1]
    assert not WorkflowStep.objects.exists()


def test_a_reader_may_report_on_a_workflow_but_not_cancel_or_restart_it(client: Client, alice: str) -> None:
    request_id = submitted(client, alice)
    reader = token_create(username="rita", role="reader")
    _, (ok, rows) = call(client, reader, "get_requests", request_id=str(request_id), with_detail=True)
    assert ok is True and len(rows) == 3
    for command in ("abort", "retry"):
        status, (ok, message) = call(client, reader, command, request_id=request_id)
        assert (status, ok) == (403, False), command
    assert Workflow.objects.get(pk=request_id).status != "cancelled"
