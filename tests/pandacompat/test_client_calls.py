"""panda-client's job and task calls through Django's test client: the captured requests of the
released client (transcripts/pandaclient_Client.jsonl, prun.jsonl) and bad input on every
endpoint (a 4xx naming the problem, 401 without a token, 403 for identities that may not)."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core import oidc
from core.services import token_create
from dispatcher.models import Job, Task, Workflow
from dispatcher.services import job_transition
from pandacompat.jobspec import JOB_ATTRIBUTES
from pandacompat.rungen import rungen_parse
from tests.factories import QueueFactory, SiteFactory
from tests.pandacompat.payloads import captured

pytestmark = pytest.mark.django_db

SANDBOX = "jobO.9fb78a27-902f-4b63-bc92-24ab17a5f423.tar.gz"


@pytest.fixture(autouse=True)
def cache_dir(settings: Any, tmp_path: Path) -> Path:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "CACHE_DIR": tmp_path / "panda-cache"}
    cache.clear()
    (tmp_path / "panda-cache").mkdir()
    (tmp_path / "panda-cache" / SANDBOX).write_bytes(b"\x1f\x8b sandbox")
    return tmp_path / "panda-cache"


@pytest.fixture(autouse=True)
def queue() -> Any:
    return QueueFactory(name="SLAC_Rubin", site=SiteFactory(name="SLAC_Rubin"), max_rss_mb=16000, max_cores=8)


def call(path: str, body: Any = None, token: str | None = None, method: str = "post", **query: Any) -> Any:
    headers = {"HTTP_ORIGIN": "atlas"}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    client = Client()
    if method == "get":
        return client.get(path, query, **headers)
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, raw, content_type="application/json", **headers)


def request_of(transcript: str, path: str) -> dict[str, Any]:
    return copy.deepcopy(next(r["body"]["json"] for r in captured(transcript) if r["path"] == path))


def captured_jobs() -> list[Any]:
    return list(json.loads(request_of("pandaclient_Client.jsonl", "/api/v1/job/submit")["jobs"]))


def submit(token: str, states: list[Any]) -> Any:
    return call("/api/v1/job/submit", {"jobs": json.dumps(states)}, token)


def prun_params(**changes: Any) -> dict[str, Any]:
    params = request_of("prun.jsonl", "/api/v1/task/submit")["task_parameters"]
    params.update(changes)
    return params


# --- job/submit ---------------------------------------------------------------------------------


def test_the_captured_submit_becomes_a_workflow_of_the_tokens_user() -> None:
    token = token_create(username="alice")
    second = captured_jobs()[0][:]
    second[JOB_ATTRIBUTES.index("jobName")] = "ailuro-wire-test-2"
    second[JOB_ATTRIBUTES.index("minRamCount")] = 3000

    reply = submit(token, [captured_jobs()[0], second])

    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert body["success"] is True
    jobs = {j.name: j for j in Job.objects.all()}
    assert [row[:2] for row in body["data"]] == [
        [jobs["ailuro-wire-test-1"].pandaid, "ailuro-wire-test-1"],
        [jobs["ailuro-wire-test-2"].pandaid, "ailuro-wire-test-2"],
    ]
    workflow = Workflow.objects.get()
    assert workflow.owner.username == "alice"
    assert body["data"][0][2] == {"jobsetID": workflow.pk, "jobDefinitionID": workflow.pk}
    one = jobs["ailuro-wire-test-1"]
    # runGen's `-p 'echo%20hello'` is the command; no sandbox was named.
    assert one.command.splitlines()[-1] == "echo hello"
    assert (one.request_memory_mb, one.request_cores, one.request_walltime_s, one.currentpriority) == (
        2000,
        1,
        3600,
        1000,
    )
    assert jobs["ailuro-wire-test-2"].request_memory_mb == 3000
    assert Task.objects.get().included_sites == ["SLAC_Rubin"]
    assert list(one.files.values_list("lfn", "role", "dataset")) == [
        ("ailuro-wire-test-1.log.tgz", "log", "user.test.log")
    ]


@pytest.mark.parametrize(
    ("states", "status", "names"),
    [
        ("not json", 400, "jobs is not valid JSON"),
        ("[]", 400, "jobs is empty"),
        ('[["x"]]', 400, "jobs[0] must be a list of 126 JobSpec attributes"),
        ('{"a": 1}', 400, "jobs must be a JSON list"),
    ],
)
def test_malformed_job_lists_are_400s_naming_the_problem(states: str, status: int, names: str) -> None:
    reply = call("/api/v1/job/submit", {"jobs": states}, token_create(username="alice"))
    assert reply.status_code == status
    assert reply.json()["success"] is False
    assert names in reply.json()["message"]
    assert not Workflow.objects.exists()


def test_a_bad_attribute_is_named_by_position_and_name() -> None:
    state = captured_jobs()[0]
    state[JOB_ATTRIBUTES.index("coreCount")] = "many"
    second = captured_jobs()[0]
    second[JOB_ATTRIBUTES.index("jobParameters")] = [1, 2]

    bad_int = submit(token_create(username="alice"), [state])
    bad_type = submit(token_create(username="bob"), [captured_jobs()[0], second])

    assert bad_int.status_code == 400
    assert bad_int.json()["data"] == {"field": "jobs[0].coreCount"}
    assert "jobs[0].coreCount must be an integer" in bad_int.json()["message"]
    assert bad_type.status_code == 400
    assert "jobs[1][49] (jobParameters)" in bad_type.json()["message"]


@pytest.mark.parametrize(
    ("attribute", "value", "names"),
    [
        ("minRamCount", "1e400", "jobs[0].minRamCount must be an integer"),
        ("currentPriority", 10**12, "jobs[0].currentPriority is out of range"),
        ("maxWalltime", {"x": 1}, "jobs[0][101] (maxWalltime) must be a string, number or null"),
    ],
)
def test_numbers_out_of_the_databases_range_are_400s(attribute: str, value: Any, names: str) -> None:
    state = captured_jobs()[0]
    state[JOB_ATTRIBUTES.index(attribute)] = value
    reply = submit(token_create(username="alice"), [state])
    assert reply.status_code == 400
    assert names in reply.json()["message"]


def test_input_files_are_refused_and_file_fields_are_bounded() -> None:
    state = captured_jobs()[0]
    files = state[-1]
    files.append(list(files[0]))
    files[1][4] = "input"  # FileSpec.type
    long_lfn = captured_jobs()[0]
    long_lfn[-1][0][3] = "x" * 401

    inputs = submit(token_create(username="alice"), [state])
    too_long = submit(token_create(username="alice"), [long_lfn])

    assert inputs.status_code == 400
    assert "jobs[0].Files[1].type 'input'" in inputs.json()["message"]
    assert "need Rucio" in inputs.json()["message"]
    assert too_long.status_code == 400
    assert "jobs[0].Files[0].lfn must be a string of 1 to 400 characters" in too_long.json()["message"]


def test_a_transformation_url_other_than_rungen_and_input_options_are_refused() -> None:
    url = captured_jobs()[0]
    url[JOB_ATTRIBUTES.index("transformation")] = "https://example.org/trf/Reco_tf.py"
    inputs = captured_jobs()[0]
    inputs[JOB_ATTRIBUTES.index("jobParameters")] = "-i \"['a.root']\" -p 'echo'"

    replies = [submit(token_create(username="alice"), [s]) for s in (url, inputs)]

    assert [r.status_code for r in replies] == [400, 400]
    assert "transformations are not downloaded" in replies[0].json()["message"]
    assert "needs input datasets (Rucio)" in replies[1].json()["message"]


def test_duplicate_job_names_and_unknown_sites_come_back_from_the_spec_checks() -> None:
    other = captured_jobs()[0]
    other[JOB_ATTRIBUTES.index("computingSite")] = "NO_SUCH_QUEUE"

    duplicate = submit(token_create(username="alice"), [captured_jobs()[0], captured_jobs()[0]])
    unknown = submit(token_create(username="alice"), [other])

    assert duplicate.status_code == 400
    assert "duplicate job name 'ailuro-wire-test-1'" in duplicate.json()["message"]
    assert unknown.status_code == 400
    assert "NO_SUCH_QUEUE" in unknown.json()["message"]


def test_job_submit_needs_a_token_and_the_user_role() -> None:
    body = {"jobs": json.dumps(captured_jobs())}
    anonymous = call("/api/v1/job/submit", body)
    reader = call("/api/v1/job/submit", body, token_create(username="rita", role="reader"))
    pilot = call("/api/v1/job/submit", body, token_create(username="p", role="pilot"))

    assert anonymous.status_code == 401
    assert "authentication required" in anonymous.json()["message"]
    assert reader.status_code == 403
    assert pilot.status_code == 403
    assert not Workflow.objects.exists()


# --- job/get_description and job/kill ---------------------------------------------------------------


def test_get_description_answers_jobspec_dicts_and_none_for_unknown_ids() -> None:
    token = token_create(username="alice")
    pandaid = submit(token, captured_jobs()).json()["data"][0][0]
    job_transition(pandaid=pandaid, to="activated", cause="test", fields={"queue_id": "SLAC_Rubin"})

    reply = call(
        "/api/v1/job/get_description",
        {"job_ids": [pandaid, 999999]},
        token_create(username="rita", role="reader"),
    )

    assert reply.status_code == 200
    described, unknown = reply.json()["data"]
    assert unknown is None
    assert described["PandaID"] == pandaid
    assert described["jobStatus"] == "activated"
    assert described["computingSite"] == "SLAC_Rubin"
    assert described["jobName"] == "ailuro-wire-test-1"
    assert described["transExitCode"] == 0
    assert set(described["creationTime"]) == {"__datetime__"}
    assert [(f["lfn"], f["type"], f["dataset"]) for f in described["Files"]] == [
        ("ailuro-wire-test-1.log.tgz", "log", "user.test.log")
    ]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "job_ids must be a non-empty list"),
        ({"job_ids": "12"}, "job_ids must be a non-empty list"),
        ({"job_ids": [1, "x"]}, "job_ids[1] must be a positive integer id"),
        ({"job_ids": [-3]}, "job_ids[0] must be a positive integer id"),
        ({"job_ids": list(range(1, 1002))}, "the limit is 1000"),
        ("[1, 2", "malformed JSON"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/job/get_description", "/api/v1/job/kill"])
def test_job_id_lists_are_checked(path: str, body: Any, names: str) -> None:
    reply = call(path, body, token_create(username="alice"))
    assert reply.status_code == 400
    assert names in reply.json()["message"]


def test_kill_cancels_the_owners_jobs_only() -> None:
    alice = token_create(username="alice")
    first, second = (row[0] for row in submit(alice, [captured_jobs()[0], _renamed("b")]).json()["data"])

    by_bob = call("/api/v1/job/kill", {"job_ids": [first]}, token_create(username="bob"))
    by_alice = call("/api/v1/job/kill", {"job_ids": [first, 424242]}, alice)
    again = call("/api/v1/job/kill", {"job_ids": [first]}, alice)
    by_operator = call(
        "/api/v1/job/kill", {"job_ids": [second]}, token_create(username="op", role="operator")
    )

    assert by_bob.json()["data"] == [False]
    assert by_alice.json()["data"] == [True, False]
    assert again.json()["data"] == [False]
    assert by_operator.json()["data"] == [True]
    assert set(Job.objects.values_list("jobstatus", flat=True)) == {"cancelled"}


def _renamed(name: str) -> list[Any]:
    state = captured_jobs()[0]
    state[JOB_ATTRIBUTES.index("jobName")] = name
    return state


def test_reads_and_kills_need_a_token() -> None:
    for path in ("/api/v1/job/get_description", "/api/v1/job/kill"):
        reply = call(path, {"job_ids": [1]})
        assert reply.status_code == 401
        assert reply.json()["success"] is False
    pilot = call("/api/v1/job/get_description", {"job_ids": [1]}, token_create(username="p", role="pilot"))
    assert pilot.status_code == 403


# --- task/submit --------------------------------------------------------------------------------


def test_the_captured_prun_task_becomes_one_task_of_n_jobs_running_the_exec() -> None:
    reply = call(
        "/api/v1/task/submit",
        {"task_parameters": prun_params(nEvents=3), "parent_tid": None},
        token_create(username="alice"),
    )

    assert reply.status_code == 200, reply.content
    task = Task.objects.get()
    assert reply.json() == {
        "success": True,
        "message": f"succeeded. new jediTaskID={task.pk}",
        "data": task.pk,
    }
    assert task.workflow.owner.username == "alice"
    assert (task.workflow.name, task.label) == (
        "user.testuser.ailuro_wire_test",
        "user.testuser.ailuro_wire_test",
    )
    assert task.included_sites == ["SLAC_Rubin"]
    jobs = list(Job.objects.order_by("pandaid"))
    assert len(jobs) == 3
    lines = jobs[0].command.splitlines()
    assert f" http://testserver/cache/{SANDBOX} {SANDBOX}" in lines[1]
    assert lines[2:] == [f"tar -xzf {SANDBOX}", "set +e", "sh run.sh"]


def test_the_sandbox_url_is_the_configured_one_when_set(settings: Any) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "SOURCE_URL": "https://panda.example.org/"}
    call("/api/v1/task/submit", {"task_parameters": prun_params()}, token_create(username="alice"))
    assert f" https://panda.example.org/cache/{SANDBOX} " in Job.objects.get().command


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"noInput": None, "dsForIN": "user.x:data"}, "input datasets (Rucio) are not supported"),
        (
            {
                "jobParameters": [
                    {"type": "template", "param_type": "input", "value": "-i ${IN}", "dsName": "d"}
                ]
            },
            "input datasets (Rucio) are not supported",
        ),
        ({"nEvents": 0}, "nEvents must be a positive integer"),
        ({"nEvents": 10**7}, "the limit is"),
        ({"nEvents": 10**30}, "nEvents must be a positive integer below 2**31"),
        ({"taskPriority": 10**12}, "taskPriority must be an integer"),
        ({"taskName": ""}, "taskName must be a non-empty string"),
        ({"jobParameters": [{"type": "constant", "value": "-r ."}]}, "no command to run (-p)"),
        (
            {"jobParameters": [{"type": "constant", "value": "-a ../etc/passwd -p x"}]},
            "not a cache file name",
        ),
        (
            {"jobParameters": [{"type": "constant", "value": "-a jobO.missing.tar.gz -p x"}]},
            "not in this server's cache",
        ),
        ({"site": "NO_SUCH_QUEUE"}, "NO_SUCH_QUEUE"),
    ],
)
def test_refused_task_parameters_say_why_in_the_message(changes: dict[str, Any], names: str) -> None:
    reply = call(
        "/api/v1/task/submit", {"task_parameters": prun_params(**changes)}, token_create(username="alice")
    )
    assert reply.status_code == 200
    assert reply.json()["success"] is False
    assert names in reply.json()["message"]
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "task_parameters must be a JSON object"),
        ({"task_parameters": [1]}, "task_parameters must be a JSON object"),
        ({"task_parameters": "{not json"}, "task_parameters is not valid JSON"),
        ({"task_parameters": {"noInput": True}, "parent_tid": 5}, "parent_tid"),
        ("nope", "malformed JSON"),
    ],
)
def test_malformed_task_submissions_are_400s(body: Any, names: str) -> None:
    reply = call("/api/v1/task/submit", body, token_create(username="alice"))
    assert reply.status_code == 400
    assert names in reply.json()["message"]


def test_task_submit_needs_a_token_and_the_user_role() -> None:
    body = {"task_parameters": prun_params()}
    assert call("/api/v1/task/submit", body).status_code == 401
    assert call("/api/v1/task/submit", body, token_create(username="r", role="reader")).status_code == 403


# --- task verbs and reads --------------------------------------------------------------------


def prun_task(token: str, n: int = 2) -> int:
    reply = call("/api/v1/task/submit", {"task_parameters": prun_params(nEvents=n)}, token)
    return int(reply.json()["data"])


def test_task_verbs_answer_jedi_return_codes() -> None:
    alice = token_create(username="alice")
    task_id = prun_task(alice)

    by_bob = call("/api/v1/task/kill", {"task_id": task_id}, token_create(username="bob"))
    missing = call("/api/v1/task/kill", {"task_id": 999999}, alice)
    paused = call("/api/v1/task/pause", {"task_id": task_id}, alice)
    resumed = call("/api/v1/task/resume", {"task_id": task_id}, alice)
    resumed_again = call("/api/v1/task/resume", {"task_id": task_id}, alice)
    retried = call("/api/v1/task/retry", {"task_id": task_id}, alice)
    killed = call("/api/v1/task/kill", {"task_id": task_id}, alice)
    killed_again = call("/api/v1/task/kill", {"task_id": str(task_id)}, alice)

    assert (by_bob.json()["success"], by_bob.json()["data"]) == (False, 3)
    assert (missing.json()["success"], missing.json()["data"]) == (False, 2)
    assert (paused.json()["success"], paused.json()["data"]) == (True, 0)
    assert (resumed.json()["success"], resumed.json()["data"]) == (True, 0)
    assert resumed_again.json()["data"] == 4
    assert retried.json()["data"] == 4
    assert "no failed jobs" in retried.json()["message"]
    assert killed.json() == {"success": True, "message": f"jediTaskID={task_id}: 2 jobs cancelled", "data": 0}
    assert killed_again.json()["data"] == 4
    assert set(Job.objects.values_list("jobstatus", flat=True)) == {"cancelled"}
    assert Task.objects.get().status == "aborted"


def test_finish_cancels_queued_jobs_and_lets_running_ones_end() -> None:
    alice = token_create(username="alice")
    task_id = prun_task(alice)
    running, queued = Job.objects.order_by("pandaid")
    for state in ("activated", "sent", "running"):
        job_transition(pandaid=running.pk, to=state, cause="test", fields={"queue_id": "SLAC_Rubin"})

    reply = call("/api/v1/task/finish", {"task_id": task_id, "soft": True}, alice)

    assert reply.json()["data"] == 0
    assert dict(Job.objects.values_list("pandaid", "jobstatus")) == {
        running.pk: "running",
        queued.pk: "cancelled",
    }


@pytest.mark.parametrize("verb", ["kill", "finish", "retry", "pause", "resume"])
def test_task_verbs_check_their_body_and_token(verb: str) -> None:
    path = f"/api/v1/task/{verb}"
    assert call(path, {"task_id": 1}).status_code == 401
    for body, names in (
        ({}, "task_id must be a positive integer"),
        ({"task_id": "x"}, "task_id"),
        ("{", "malformed"),
    ):
        reply = call(path, body, token_create(username="alice"))
        assert reply.status_code == 400
        assert names in reply.json()["message"]


def test_status_details_job_ids_and_the_task_list() -> None:
    alice = token_create(username="alice")
    task_id = prun_task(alice, 2)
    other = prun_task(token_create(username="bob"), 1)
    first = Job.objects.filter(task_id=task_id).order_by("pandaid").first()
    assert first is not None
    job_transition(pandaid=first.pk, to="activated", cause="test", fields={"queue_id": "SLAC_Rubin"})

    status = call("/api/v1/task/get_status", token=alice, method="get", task_id=task_id)
    details = call(
        "/api/v1/task/get_details", token=alice, method="get", task_id=task_id, include_parameters=False
    )
    ids = call("/api/v1/task/get_job_ids", token=alice, method="get", task_id=task_id)
    mine = call("/api/v1/task/get_tasks_detailed_info_since", token=alice, method="get", n_tasks=10)
    by_id = call(
        "/api/v1/task/get_tasks_detailed_info_since",
        token=alice,
        method="get",
        filters=json.dumps({"jediTaskID": str(other), "userName": "bob"}),
        since="2000-01-01 00:00:00",
    )
    running = call(
        "/api/v1/task/get_tasks_detailed_info_since",
        token=alice,
        method="get",
        filters=json.dumps({"superStatus": "running"}),
    )

    assert status.json() == {"success": True, "message": "", "data": "running"}
    assert details.json()["data"]["jediTaskID"] == task_id
    assert details.json()["data"]["nFiles"] == 2
    assert ids.json()["data"] == sorted(Job.objects.filter(task_id=task_id).values_list("pandaid", flat=True))
    assert [t["jediTaskID"] for t in mine.json()["data"]] == [task_id]
    assert [(t["jediTaskID"], t["userName"], t["status"]) for t in by_id.json()["data"]] == [
        (other, "bob", "ready")
    ]
    assert [t["jediTaskID"] for t in running.json()["data"]] == [task_id]
    assert (
        call("/api/v1/task/get_status", token=alice, method="get", task_id=999999).json()["success"] is False
    )


@pytest.mark.parametrize(
    ("path", "query", "names"),
    [
        ("get_status", {}, "task_id must be a positive integer"),
        ("get_details", {"task_id": "abc"}, "task_id must be a positive integer"),
        ("get_job_ids", {"task_id": "0"}, "task_id must be a positive integer"),
        ("get_tasks_detailed_info_since", {"n_tasks": "0"}, "n_tasks must be an integer"),
        ("get_tasks_detailed_info_since", {"since": "yesterday"}, "since must be"),
        ("get_tasks_detailed_info_since", {"filters": "{"}, "filters must be a JSON object"),
        ("get_tasks_detailed_info_since", {"filters": '{"cloud": "US"}'}, "'cloud' is not a filter"),
        ("get_tasks_detailed_info_since", {"filters": '{"reqID": "x"}'}, "filters.reqID must be a positive"),
    ],
)
def test_task_reads_check_their_query(path: str, query: dict[str, str], names: str) -> None:
    reply = call(f"/api/v1/task/{path}", token=token_create(username="alice"), method="get", **query)
    assert reply.status_code == 400
    assert names in reply.json()["message"]
    assert call(f"/api/v1/task/{path}", method="get", **query).status_code == 401


# --- pure parts ---------------------------------------------------------------------------------


def test_rungen_arguments_are_read_as_prun_writes_them() -> None:
    args = rungen_parse(f'-j "" --sourceURL http://h:1 -r sub/dir -a {SANDBOX} -p "sh%20run.sh%20%3E%20x"')
    assert (args.exec_command, args.sandbox, args.workdir, args.source_url) == (
        "sh run.sh > x",
        SANDBOX,
        "sub/dir",
        "http://h:1",
    )


# --- query counts -------------------------------------------------------------------------------


def _queries(path: str, token: str, body: Any = None, **query: Any) -> int:
    with CaptureQueriesContext(connection) as ctx:
        reply = call(path, body, token, method="get" if body is None else "post", **query)
    assert reply.status_code == 200
    return len(ctx.captured_queries)


def test_reads_cost_the_same_few_queries_for_one_job_or_task_as_for_many() -> None:
    alice = token_create(username="alice")
    one = [row[0] for row in submit(alice, [captured_jobs()[0]]).json()["data"]]
    many = [row[0] for row in submit(alice, [_renamed(f"n{i}") for i in range(6)]).json()["data"]]
    prun_task(alice, 1)
    for _ in range(4):
        prun_task(alice, 3)

    counts = {
        "describe one": _queries("/api/v1/job/get_description", alice, {"job_ids": one}),
        "describe many": _queries("/api/v1/job/get_description", alice, {"job_ids": many}),
        "list": _queries("/api/v1/task/get_tasks_detailed_info_since", alice, n_tasks=1),
        "list many": _queries("/api/v1/task/get_tasks_detailed_info_since", alice, n_tasks=50),
    }
    # The token, then the jobs and their files (or the tasks and their counts): no query per row.
    assert counts == {"describe one": 3, "describe many": 3, "list": 3, "list many": 3}


def test_an_unreachable_identity_provider_is_a_503_with_retry_after(settings: Any) -> None:
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # discard port: nothing answers
    settings.OIDC_ENABLED = True
    settings.OIDC_AUDIENCE = ["urn:wms:api"]
    settings.OIDC_OP_JWKS_ENDPOINT = "http://127.0.0.1:9/jwks"
    oidc.caches_clear()
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k1","typ":"at+jwt"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(b'{"sub":"x","iss":"http://127.0.0.1:9"}').rstrip(b"=").decode()

    reply = call("/api/v1/task/submit", {"task_parameters": prun_params()}, f"{header}.{claims}.c2ln")

    assert reply.status_code == 503
    assert reply["Retry-After"] == str(settings.AILURO_RETRY_AFTER_S)
    assert "identity provider unavailable" in reply.json()["message"]
    oidc.caches_clear()
