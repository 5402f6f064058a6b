"""The REST API of workflows, tasks, jobs, attempts, sites and queues: HTTP in, response and
database checked."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from core.services import token_create
from dispatcher.models import Job, JobAttempt, PayloadLog, Workflow
from dispatcher.services import NewJob, workflow_submit
from dispatcher.states import JobStatus
from tests.factories import QueueFactory, UserFactory

pytestmark = pytest.mark.django_db

SPEC = """
name: api-demo
dimensions: {visit: [1, 2], detector: {range: [0, 3]}}
labels:
  isr: {command: "isr {visit} {detector}", over: [visit, detector]}
  calibrate: {command: "cal {visit} {detector}", over: [visit, detector], after: [isr]}
  visitSummary: {command: "sum {visit}", over: [visit], after: [calibrate]}
"""


def client_for(username: str, role: str = "user") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username=username, role=role)}")
    return client


def submit(client: APIClient, body: str | bytes, content_type: str = "application/yaml", **extra: Any) -> Any:
    return client.generic(
        "POST", reverse("dispatcher:workflow-list"), body, content_type=content_type, **extra
    )


@pytest.fixture
def alice() -> APIClient:
    return client_for("alice")


@pytest.fixture
def workflow(alice: APIClient) -> Workflow:
    response = submit(alice, SPEC)
    assert response.status_code == 201, response.content
    return Workflow.objects.get(pk=response.json()["id"])


# --- submission --------------------------------------------------------------------------------


def test_submit_yaml_answers_201_and_writes_the_dag(alice: APIClient) -> None:
    response = submit(alice, SPEC)

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "api-demo"
    assert body["produsername"] == "alice"
    assert body["counts"] == {"defined": 14}
    wf = Workflow.objects.get(pk=body["id"])
    assert wf.owner.username == "alice"
    assert Job.objects.get(workflow=wf, name="calibrate_2_1").pending_parents == 1
    assert Job.objects.get(workflow=wf, name="visitSummary_2").pending_parents == 3


def test_submit_json_on_the_submit_url_with_a_name_override(alice: APIClient) -> None:
    spec = {"name": "j", "jobs": [{"name": "a", "label": "x", "command": "true"}]}
    response = alice.post(
        reverse("dispatcher:workflow-submit") + "?name=renamed",
        json.dumps(spec),
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["name"] == "renamed"
    assert Workflow.objects.get(pk=response.json()["id"]).spec == spec


def test_malformed_yaml_is_400_with_line_and_column(alice: APIClient) -> None:
    response = submit(alice, "name: x\njobs:\n  - {name: a, label: [b\n")

    assert response.status_code == 400
    body = response.json()
    assert body["line"] == 4
    assert isinstance(body["column"], int)
    assert "line 4" in body["detail"]
    assert not Workflow.objects.exists()


def test_invalid_dag_is_400_naming_the_cycle_and_writes_nothing(alice: APIClient) -> None:
    spec = {
        "jobs": [
            {"name": "a", "label": "x", "command": "t", "depends_on": ["c"]},
            {"name": "b", "label": "x", "command": "t", "depends_on": ["a"]},
            {"name": "c", "label": "x", "command": "t", "depends_on": ["b"]},
        ]
    }
    response = submit(alice, json.dumps(spec), "application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("dependency cycle: ")
    assert set(response.json()["detail"].split(": ")[1].split(" -> ")) == {"a", "b", "c"}
    assert not Job.objects.exists()


def test_unsatisfiable_request_is_400_naming_job_and_limit(alice: APIClient) -> None:
    QueueFactory(name="Q1", max_rss_mb=4000)
    spec = {"jobs": [{"name": "big", "label": "x", "command": "t", "resources": {"memory_mb": 5000}}]}
    response = submit(alice, json.dumps(spec), "application/json")
    assert response.status_code == 400
    assert "'big' requests memory_mb=5000" in response.json()["detail"]
    assert "max_rss_mb of Q1" in response.json()["detail"]


def test_oversized_spec_is_413_before_the_body_is_read(alice: APIClient) -> None:
    with override_settings(AILURO={**settings.AILURO, "MAX_SPEC_BYTES": 1024}):
        # The declared length is over the cap; the test payload holds fewer bytes and would fail
        # loudly if the view tried to read them all.
        response = submit(alice, "name: x\n", CONTENT_LENGTH="10000000")
        assert response.status_code == 413
        assert "limit is 1024" in response.json()["detail"]
        # A body over the cap with its true length: refused the same way.
        response = submit(alice, "x" * 5000)
        assert response.status_code == 413


def test_too_many_jobs_is_413_without_expanding(alice: APIClient) -> None:
    spec = "dimensions: {a: {range: [0, 100000]}, b: {range: [0, 100000]}}\nlabels:\n  x: {command: t, over: [a, b]}\n"
    response = submit(alice, spec)
    assert response.status_code == 413
    assert "AILURO_MAX_DAG_JOBS" in response.json()["detail"]


def test_unknown_spec_key_is_400_naming_the_field(alice: APIClient) -> None:
    response = submit(alice, "jobs:\n  - {name: a, label: x, command: t, memroy_mb: 3}\n")
    assert response.status_code == 400
    assert response.json()["field"] == "jobs[0].memroy_mb"


def test_anonymous_cannot_submit() -> None:
    response = submit(APIClient(), SPEC)
    assert response.status_code == 401


# --- reading -----------------------------------------------------------------------------------


def test_detail_report_and_spec(alice: APIClient, workflow: Workflow) -> None:
    detail = alice.get(reverse("dispatcher:workflow-detail", args=[workflow.pk])).json()
    assert [t["label"] for t in detail["tasks"]] == ["isr", "calibrate", "visitSummary"]
    assert detail["tasks"][0]["counts"] == {"defined": 6}

    report = alice.get(reverse("dispatcher:workflow-report", args=[workflow.pk])).json()
    assert [(r["label"], r["total"], r["defined"]) for r in report["labels"]] == [
        ("isr", 6, 6),
        ("calibrate", 6, 6),
        ("visitSummary", 2, 2),
    ]
    assert report["total"]["total"] == 14

    spec = alice.get(reverse("dispatcher:workflow-spec", args=[workflow.pk])).json()
    assert spec["name"] == "api-demo"


def test_lists_use_keyset_pagination(alice: APIClient) -> None:
    owner = UserFactory(username="alice")
    for i in range(5):
        workflow_submit(owner=owner, name=f"w{i}", jobs=[NewJob(name="a", label="x", command="t")])

    page = alice.get(reverse("dispatcher:workflow-list"), {"limit": 2}).json()
    names = [w["name"] for w in page["results"]]
    while page["next"]:
        page = alice.get(page["next"]).json()
        names += [w["name"] for w in page["results"]]

    assert names == ["w4", "w3", "w2", "w1", "w0"]


def test_job_filters_use_the_monitor_names_and_grammar(alice: APIClient, workflow: Workflow) -> None:
    url = reverse("dispatcher:job-list")
    base = {"workflow": workflow.pk, "limit": 100}

    def names(**params: str) -> set[str]:
        return {j["name"] for j in alice.get(url, {**base, **params}).json()["results"]}

    assert len(names(jobstatus="defined")) == 14
    assert names(label="visitSummary") == {"visitSummary_1", "visitSummary_2"}
    assert names(label="isr|visitSummary", name="*_2_*|visitSummary_2") == {
        "isr_2_0",
        "isr_2_1",
        "isr_2_2",
        "visitSummary_2",
    }
    assert len(names(label="!isr")) == 8
    assert names(jobstatus="failed") == set()


def test_unknown_or_malformed_filters_are_400_naming_the_field(alice: APIClient) -> None:
    response = alice.get(reverse("dispatcher:job-list"), {"jobstate": "failed"})
    assert response.status_code == 400
    assert response.json()["field"] == "jobstate"
    response = alice.get(reverse("dispatcher:job-list"), {"pandaid": "abc"})
    assert response.status_code == 400
    assert response.json()["field"] == "pandaid"


@pytest.mark.parametrize("raw", [" 7", "7 ", "7\n", "\u0663", "1|x", "!", "|", "1e3", "--1"])
def test_integer_filters_refuse_what_their_schema_pattern_refuses(alice: APIClient, raw: str) -> None:
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    (parameter,) = [
        p for p in schema["paths"]["/api/v1/tasks/"]["get"]["parameters"] if p["name"] == "jeditaskid"
    ]
    assert re.fullmatch(parameter["schema"]["pattern"], raw) is None

    response = alice.get(reverse("dispatcher:task-list"), {"jeditaskid": raw})

    assert response.status_code == 400
    assert response.json()["field"] == "jeditaskid"


def test_integer_filters_take_the_grammar_and_an_empty_value(alice: APIClient, workflow: Workflow) -> None:
    url = reverse("dispatcher:job-list")
    task_ids = sorted(set(Job.objects.filter(workflow=workflow).values_list("task_id", flat=True)))

    def count(**params: str) -> int:
        return len(alice.get(url, {"limit": 100, **params}).json()["results"])

    assert count(jeditaskid="") == 14
    assert (
        count(jeditaskid=f"{task_ids[0]}|{task_ids[1]}") + count(jeditaskid=f"!{task_ids[0]}|{task_ids[1]}")
        == 14
    )
    assert count(jeditaskid=f"-{task_ids[0]}") == 0


def test_job_detail_attempts_log_tasks_sites_and_queues(alice: APIClient, workflow: Workflow) -> None:
    queue = QueueFactory(name="Q_READ")
    job = Job.objects.get(workflow=workflow, name="calibrate_1_0")
    JobAttempt.objects.create(
        job=job, attemptnr=1, jobstatus="failed", queue="Q_READ", endtime="2026-01-01T00:00:00Z"
    )
    PayloadLog.objects.create(job=job, attemptnr=1, sequence=0, text="hello ")
    PayloadLog.objects.create(job=job, attemptnr=1, sequence=1, text="world\n")

    detail = alice.get(reverse("dispatcher:job-detail", args=[job.pk])).json()
    assert detail["parents"] == [Job.objects.get(workflow=workflow, name="isr_1_0").pk]
    assert detail["jeditaskid"] == job.task_id
    attempts = alice.get(reverse("dispatcher:job-attempts", args=[job.pk])).json()
    assert [(a["attemptnr"], a["jobstatus"], a["computingsite"]) for a in attempts] == [
        (1, "failed", "Q_READ")
    ]
    assert (
        alice.get(reverse("dispatcher:attempt-list"), {"pandaid": job.pk}).json()["results"][0]["pandaid"]
        == job.pk
    )
    assert alice.get(reverse("dispatcher:job-log", args=[job.pk])).json()["text"] == "hello world\n"
    task = alice.get(reverse("dispatcher:task-detail", args=[job.task_id])).json()
    assert task["label"] == "calibrate"
    assert task["counts"] == {"defined": 6}
    assert (
        alice.get(reverse("dispatcher:task-list"), {"workflow": workflow.pk}).json()["results"][0]["workflow"]
        == workflow.pk
    )
    assert alice.get(reverse("dispatcher:queue-detail", args=["Q_READ"])).json()["site"] == queue.site.name
    sites = alice.get(reverse("dispatcher:site-list")).json()["results"]
    assert sites[0]["queues"] == ["Q_READ"]
    assert alice.get(reverse("dispatcher:queue-detail", args=["NOPE"])).status_code == 404


def test_list_pages_cost_a_fixed_number_of_queries(
    alice: APIClient, django_assert_max_num_queries: Any
) -> None:
    owner = UserFactory(username="alice")
    for i in range(30):
        workflow_submit(owner=owner, name=f"w{i}", jobs=[NewJob(name="a", label="x", command="t")])
    with django_assert_max_num_queries(8):
        assert len(alice.get(reverse("dispatcher:workflow-list"), {"limit": 30}).json()["results"]) == 30
    with django_assert_max_num_queries(8):
        assert len(alice.get(reverse("dispatcher:task-list"), {"limit": 30}).json()["results"]) == 30
    with django_assert_max_num_queries(6):
        assert len(alice.get(reverse("dispatcher:job-list"), {"limit": 30}).json()["results"]) == 30


def test_ping_says_who_you_are(alice: APIClient) -> None:
    body = alice.get(reverse("dispatcher:ping")).json()
    assert body["ok"] is True
    assert body["user"] == "alice"
    assert "user" in body["roles"]


# --- the permission matrix ---------------------------------------------------------------------

ACTIONS = {
    "cancel": {},
    "retry": {},
    "restart": {},
    "boost-priority": {"delta": 10},
    "set-memory": {"memory_mb": 3000},
}


def actor(kind: str) -> APIClient:
    if kind == "owner":
        return client_for("alice")
    if kind == "other":
        return client_for("bob")
    if kind == "operator":
        return client_for("olga", role="operator")
    if kind == "operator-group":
        user = UserFactory(username="oscar")
        user.groups.add(Group.objects.get_or_create(name="ailuro-operator")[0])
        client = APIClient()
        client.force_authenticate(user)
        return client
    if kind == "reader":
        return client_for("alice", role="reader")
    if kind == "pilot":
        return client_for("pilot-robot", role="pilot")
    raise AssertionError(kind)


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("owner", 200),
        ("other", 403),
        ("operator", 200),
        ("operator-group", 200),
        ("reader", 403),
        ("pilot", 403),
    ],
)
def test_permission_matrix_for_every_action(action: str, who: str, expected: int, workflow: Workflow) -> None:
    before = dict(Job.objects.filter(workflow=workflow).values_list("pandaid", "jobstatus"))
    memory_before = set(Job.objects.filter(workflow=workflow).values_list("request_memory_mb", flat=True))
    priority_before = workflow.priority

    response = actor(who).post(
        reverse(f"dispatcher:workflow-{action}", args=[workflow.pk]), ACTIONS[action], format="json"
    )

    assert response.status_code == expected, response.content
    workflow.refresh_from_db()
    after = dict(Job.objects.filter(workflow=workflow).values_list("pandaid", "jobstatus"))
    if expected != 200:
        assert "detail" in response.json()
        assert after == before
        assert (
            set(Job.objects.filter(workflow=workflow).values_list("request_memory_mb", flat=True))
            == memory_before
        )
        assert workflow.priority == priority_before
        return
    if action == "cancel":
        assert set(after.values()) == {JobStatus.CANCELLED}
    elif action == "boost-priority":
        assert workflow.priority == priority_before + 10
    elif action == "set-memory":
        assert set(Job.objects.filter(workflow=workflow).values_list("request_memory_mb", flat=True)) == {
            3000
        }


@pytest.mark.parametrize(
    ("who", "expected"),
    [("owner", 200), ("other", 200), ("operator", 200), ("reader", 200), ("pilot", 403)],
)
def test_permission_matrix_for_reading(who: str, expected: int, workflow: Workflow) -> None:
    client = actor(who)
    for name in ("workflow-detail", "workflow-report", "workflow-spec"):
        assert client.get(reverse(f"dispatcher:{name}", args=[workflow.pk])).status_code == expected
    assert client.get(reverse("dispatcher:job-list")).status_code == expected


@pytest.mark.parametrize(("who", "expected"), [("owner", 404), ("operator", 404), ("pilot", 403)])
def test_missing_workflow_is_404_except_for_roles_that_may_not_ask(who: str, expected: int) -> None:
    response = actor(who).post(reverse("dispatcher:workflow-cancel", args=[999999]), {}, format="json")
    assert response.status_code == expected


def test_readers_and_pilots_cannot_submit() -> None:
    assert submit(actor("reader"), SPEC).status_code == 403
    assert submit(actor("pilot"), SPEC).status_code == 403


def test_action_input_errors_name_the_field(alice: APIClient, workflow: Workflow) -> None:
    response = alice.post(
        reverse("dispatcher:workflow-set-memory", args=[workflow.pk]), {"memory_mb": -1}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "memory_mb"
    response = alice.post(
        reverse("dispatcher:workflow-boost-priority", args=[workflow.pk]),
        {"priority": 1, "delta": 2},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "priority"
    response = alice.post(
        reverse("dispatcher:workflow-restart", args=[workflow.pk]), {"pandaids": ["x"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "pandaids"


def test_actions_on_a_selection(alice: APIClient, workflow: Workflow) -> None:
    response = alice.post(
        reverse("dispatcher:workflow-cancel", args=[workflow.pk]), {"labels": ["visitSummary"]}, format="json"
    )
    assert response.json() == {"workflow": workflow.pk, "cancelled": 2}
    response = alice.post(reverse("dispatcher:workflow-restart", args=[workflow.pk]), {}, format="json")
    assert response.json() == {"workflow": workflow.pk, "restarted": 2}
    assert set(Job.objects.filter(workflow=workflow).values_list("jobstatus", flat=True)) == {"defined"}


def test_schema_and_docs_are_served_with_every_filter() -> None:
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert client.get("/api/docs/").status_code == 200
    job_params = {p["name"] for p in schema["paths"]["/api/v1/jobs/"]["get"]["parameters"]}
    assert {
        "jobstatus",
        "computingsite",
        "produsername",
        "jeditaskid",
        "label",
        "hours",
        "cursor",
        "limit",
    } <= job_params
    assert "post" in schema["paths"]["/api/v1/workflows/{workflow_id}/restart/"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_anonymous_read_follows_the_setting(workflow: Workflow) -> None:
    anonymous = APIClient()
    url = reverse("dispatcher:workflow-detail", args=[workflow.pk])
    with override_settings(AILURO={**settings.AILURO, "ANONYMOUS_READ": True}):
        assert anonymous.get(url).status_code == 200
        assert anonymous.get(reverse("dispatcher:job-list")).status_code == 200
        assert (
            anonymous.post(reverse("dispatcher:workflow-cancel", args=[workflow.pk]), {}).status_code == 401
        )
    with override_settings(AILURO={**settings.AILURO, "ANONYMOUS_READ": False}):
        assert anonymous.get(url).status_code == 401
        assert anonymous.get(reverse("dispatcher:job-list")).status_code == 401


def test_report_and_counts_queries_cost_fixed_queries(
    workflow: Workflow, django_assert_num_queries: Any
) -> None:
    from dispatcher.queries import workflow_label_report, workflows_state_counts

    with django_assert_num_queries(2):
        rows = workflow_label_report(workflow.pk)
    assert [r["label"] for r in rows] == ["isr", "calibrate", "visitSummary"]
    with django_assert_num_queries(2):
        assert workflows_state_counts([workflow.pk]) == {workflow.pk: {"defined": 14}}


def test_time_windows_use_the_monitor_words(alice: APIClient, workflow: Workflow) -> None:
    from datetime import timedelta

    from django.utils import timezone

    Job.objects.filter(workflow=workflow, label="isr").update(
        statechangetime=timezone.now() - timedelta(hours=3)
    )
    Job.objects.filter(workflow=workflow, label="calibrate").update(
        statechangetime=timezone.now() - timedelta(days=3)
    )
    Job.objects.filter(workflow=workflow, label="visitSummary").update(
        statechangetime=timezone.now() - timedelta(days=10)
    )
    url = reverse("dispatcher:job-list")

    assert len(alice.get(url, {"hours": 4, "limit": 100}).json()["results"]) == 6
    assert len(alice.get(url, {"days": 4, "limit": 100}).json()["results"]) == 12
    assert len(alice.get(reverse("dispatcher:workflow-list"), {"hours": 1}).json()["results"]) == 1
    response = alice.get(url, {"hours": "soon"})
    assert response.status_code == 400
    assert response.json()["field"] == "hours"
    response = alice.get(reverse("dispatcher:site-list"), {"hours": 1})
    assert response.status_code == 400
    assert response.json()["field"] == "hours"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=null", "limit"),
        ("jeditaskid=1&jeditaskid=2", "jeditaskid"),
        ("produsername=a%00b", "produsername"),
        ("hours=0", "hours"),
    ],
)
def test_malformed_list_parameters_are_a_400_naming_them(query: str, field: str) -> None:
    reply = client_for("ops", "operator").get(f"/api/v1/jobs/?{query}")

    assert reply.status_code == 400
    assert reply.json()["field"] == field
