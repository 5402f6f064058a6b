"""Task site constraints (PanDA's includedSite / excludedSite): the spec, submission checks,
brokerage and the API that shows them (the pure rule is tested with the ranking, test_brokerage.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from core.services import token_create
from dispatcher.brokerage import SiteRule
from dispatcher.models import Job, Task, Workflow
from dispatcher.services import broker_one_batch
from dispatcher.workflows import WorkflowInvalid
from dispatcher.workflows.spec import spec_from_jobs, spec_parse
from tests.factories import JobFactory, QueueFactory, SiteFactory, TaskFactory

CAPS = {"max_jobs": 1000, "max_edges": 10_000}
SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "reference" / "workflow-spec.schema.json"


# --- the spec ----------------------------------------------------------------------------------------


def _spec(**labels_extra: Any) -> dict[str, Any]:
    return {
        "defaults": {"sites": {"exclude": ["*_TEST"]}},
        "labels": {
            "isr": {"command": "isr {v}", "over": {"v": [1, 2]}, **labels_extra},
            "coadd": {"command": "coadd", "after": ["isr"], "sites": {"include": ["SLAC_*"]}},
        },
        "overrides": {"coadd": {"sites": {"include": ["IN2P3"]}}},
    }


def test_sites_layer_like_every_setting_and_survive_the_explicit_rewrite() -> None:
    parsed = spec_parse(_spec(), **CAPS)

    assert parsed.labels["isr"].sites == SiteRule(exclude=("*_TEST",))
    # Each key layers on its own: the override's include wins, the defaults' exclude stays.
    assert parsed.labels["coadd"].sites == SiteRule(include=("IN2P3",), exclude=("*_TEST",))
    explicit = spec_from_jobs(name="w", jobs=parsed.jobs, labels=parsed.labels)
    assert spec_parse(explicit, **CAPS).labels == parsed.labels


@pytest.mark.parametrize(
    ("sites", "field"),
    [
        ("SLAC", "labels.isr.sites"),
        ({"include": "SLAC"}, "labels.isr.sites.include"),
        ({"include": [""]}, "labels.isr.sites.include[0]"),
        ({"exclude": [7]}, "labels.isr.sites.exclude[0]"),
        ({"only": ["SLAC"]}, "labels.isr.sites"),
        ({"include": ["Q"] * 101}, "labels.isr.sites.include"),
    ],
)
def test_malformed_sites_are_refused_naming_the_field_as_the_schema_does(sites: Any, field: str) -> None:
    import jsonschema

    spec = _spec(sites=sites)
    with pytest.raises(WorkflowInvalid) as refused:
        spec_parse(spec, **CAPS)
    assert refused.value.field.startswith(field)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, json.loads(SCHEMA.read_text()))


def test_a_job_of_the_explicit_form_cannot_carry_sites() -> None:
    spec = {"jobs": [{"name": "a", "label": "x", "command": "t", "sites": {"include": ["Q"]}}]}
    with pytest.raises(WorkflowInvalid, match="sites"):
        spec_parse(spec, **CAPS)


# --- submission, brokerage and the API (PostgreSQL) ------------------------------------------------


def _client(username: str = "alice") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username=username, role='user')}")
    return client


def _submit(client: APIClient, spec: dict[str, Any]) -> Any:
    return client.post(reverse("dispatcher:workflow-list"), json.dumps(spec), content_type="application/json")


@pytest.fixture
def queues() -> None:
    QueueFactory(name="SLAC_Rubin", site=SiteFactory(name="SLAC"), max_rss_mb=4000)
    QueueFactory(name="SLAC_Himem", site=SiteFactory(name="SLAC"), max_rss_mb=32000)
    QueueFactory(name="CC_Rubin", site=SiteFactory(name="IN2P3"), max_rss_mb=8000)


@pytest.mark.django_db
def test_submitted_sites_reach_the_task_and_its_api(queues: None) -> None:
    client = _client()
    response = _submit(client, _spec())
    assert response.status_code == 201, response.content

    tasks = {t.label: t for t in Task.objects.filter(workflow_id=response.json()["id"])}
    assert (tasks["coadd"].included_sites, tasks["coadd"].excluded_sites) == (["IN2P3"], ["*_TEST"])
    assert (tasks["isr"].included_sites, tasks["isr"].excluded_sites) == ([], ["*_TEST"])
    shown = client.get(reverse("dispatcher:task-detail", args=[tasks["coadd"].pk])).json()
    assert (shown["included_sites"], shown["excluded_sites"]) == (["IN2P3"], ["*_TEST"])


@pytest.mark.django_db
def test_sites_that_match_no_queue_are_400_and_nothing_is_written(queues: None) -> None:
    response = _submit(_client(), _spec(sites={"include": ["CERN*"]}))

    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "labels.isr.sites"
    assert "match no queue or site" in body["detail"]
    assert not Workflow.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_a_job_too_big_for_its_sites_is_400_though_another_site_could_run_it(queues: None) -> None:
    spec = {
        "labels": {"coadd": {"sites": {"include": ["IN2P3"]}}},
        "jobs": [{"name": "big", "label": "coadd", "command": "t", "resources": {"memory_mb": 16000}}],
    }
    response = _submit(_client(), spec)

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "job 'big' requests memory_mb=16000 but no queue of its sites allows more than 8000 "
        "(max_rss_mb of CC_Rubin)"
    )


@pytest.mark.django_db
def test_broker_one_batch_places_jobs_only_where_their_task_allows(queues: None) -> None:
    in2p3 = TaskFactory(included_sites=["IN2P3"])
    not_slac_rubin = TaskFactory(excluded_sites=["SLAC_Rubin", "CC_*"])
    free = TaskFactory()
    jobs = [JobFactory(task=in2p3) for _ in range(3)] + [JobFactory(task=not_slac_rubin) for _ in range(3)]
    jobs += [JobFactory(task=free) for _ in range(3)]

    assert broker_one_batch(limit=100) == 9

    placed = dict(Job.objects.values_list("pandaid", "queue_id"))
    assert {placed[j.pk] for j in jobs[:3]} == {"CC_Rubin"}
    assert {placed[j.pk] for j in jobs[3:6]} == {"SLAC_Himem"}
    assert all(placed[j.pk] for j in jobs[6:])  # the free task goes anywhere


@pytest.mark.django_db
def test_a_job_whose_sites_are_all_offline_waits_with_the_reason(queues: None) -> None:
    QueueFactory(name="CERN_Rubin", site=SiteFactory(name="CERN"), status="offline")
    job = JobFactory(task=TaskFactory(included_sites=["CERN"]))

    assert broker_one_batch(limit=100) == 0

    job.refresh_from_db()
    assert (job.jobstatus, job.brokerageerrorcode) == ("defined", 100)
    assert "CC_Rubin is not among the task's sites (CERN)" in job.brokerageerrordiag


@pytest.mark.django_db
def test_set_memory_is_refused_when_no_queue_of_the_labels_sites_fits(queues: None) -> None:
    from dispatcher.services import jobs_set_memory

    response = _submit(_client(), _spec())
    assert response.status_code == 201, response.content
    workflow_id = response.json()["id"]

    with pytest.raises(WorkflowInvalid, match="no queue of its sites allows more than 8000"):
        jobs_set_memory(workflow_id=workflow_id, actor="operator", memory_mb=16000, labels=["coadd"])
    assert jobs_set_memory(workflow_id=workflow_id, actor="operator", memory_mb=16000, labels=["isr"]) == {
        "jobs": 2
    }
