"""Every malformed rule of a campaign spec is refused by `POST /api/v1/campaigns/` (the body
`ailuro campaign create` sends: {spec, comment}) with a 400 naming the field, and nothing is
stored; so dry run and launch never meet one. A rescue's body is checked the same way, and a spec
stored before a check existed makes dry run and launch answer 409 naming the field, not 500."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignVersion, Group
from core.services import token_create
from tests.campaigns.conftest import spec_text

pytestmark = pytest.mark.django_db

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit setting one dotted path (`steps.0.split`) of the base spec; `...` deletes it."""

    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key_or_index: Any = int(last) if isinstance(node, list) else last
        if value is ...:
            del node[key_or_index]
        else:
            node[key_or_index] = copy.deepcopy(value)

    return edit


def _split(rule: Any) -> Edit:
    return _set("steps.0.split", rule)


def _data(data: Any) -> Edit:
    return _set("data", data)


def _override(value: Any) -> Edit:
    return _set("steps.0.overrides", value)


# (case id, edit, the field the 400 names)
CASES: list[tuple[str, Edit, str]] = [
    # split rules: the rule, every parameter, every entry
    ("split-not-a-mapping", _split("query"), "steps[0].split"),
    ("split-rule-unknown", _split({"rule": "chunks"}), "steps[0].split.rule"),
    ("split-rule-not-a-name", _split({"rule": ["query"]}), "steps[0].split.rule"),
    ("split-none-extra-key", _split({"rule": "none", "values": [1]}), "steps[0].split.values"),
    ("values-missing", _split({"rule": "values"}), "steps[0].split.values"),
    ("values-empty", _split({"rule": "values", "values": []}), "steps[0].split.values"),
    ("values-not-a-list", _split({"rule": "values", "values": 3}), "steps[0].split.values"),
    ("values-float", _split({"rule": "values", "values": [1.5]}), "steps[0].split.values"),
    ("values-bool", _split({"rule": "values", "values": [True]}), "steps[0].split.values"),
    ("values-null", _split({"rule": "values", "values": [None]}), "steps[0].split.values"),
    ("values-empty-entry", _split({"rule": "values", "values": [[]]}), "steps[0].split.values"),
    ("values-range-no-max", _split({"rule": "values", "values": [{"min": 1}]}), "steps[0].split.values"),
    (
        "values-range-reversed",
        _split({"rule": "values", "values": [{"min": 6, "max": 1}]}),
        "steps[0].split.values",
    ),
    (
        "values-range-mixed-types",
        _split({"rule": "values", "values": [{"min": 1, "max": "z"}]}),
        "steps[0].split.values",
    ),
    (
        "values-range-unknown-key",
        _split({"rule": "values", "values": [{"min": 1, "max": 6, "size": 2}]}),
        "steps[0].split.values",
    ),
    (
        "values-range-empty-name",
        _split({"rule": "values", "values": [{"min": 1, "max": 6, "name": " "}]}),
        "steps[0].split.values",
    ),
    (
        "values-same-name-twice",
        _split(
            {
                "rule": "values",
                "values": [{"min": 1, "max": 3, "name": "a"}, {"min": 4, "max": 6, "name": "a"}],
            }
        ),
        "steps[0].split.values",
    ),
    (
        "values-value-twice",
        _split({"rule": "values", "values": [[1, 2, 3], [3, 4, 5, 6]]}),
        "steps[0].split.values",
    ),
    (
        "values-ranges-overlap",
        _split({"rule": "values", "values": [{"min": 1, "max": 4}, {"min": 3, "max": 6}]}),
        "steps[0].split.values",
    ),
    (
        "values-leave-ids-out",
        _split({"rule": "values", "values": [{"min": 1, "max": 3}]}),
        "steps[0].split.values",
    ),
    (
        "values-match-no-id",
        _split({"rule": "values", "values": [{"min": 1, "max": 6}, {"min": 7, "max": 9}]}),
        "steps[0].split.values",
    ),
    ("ranges-missing", _split({"rule": "ranges"}), "steps[0].split.ranges"),
    ("ranges-empty", _split({"rule": "ranges", "ranges": []}), "steps[0].split.ranges"),
    ("ranges-not-a-list", _split({"rule": "ranges", "ranges": "1-6"}), "steps[0].split.ranges"),
    ("ranges-one-bound", _split({"rule": "ranges", "ranges": [[1]]}), "steps[0].split.ranges"),
    ("ranges-three-bounds", _split({"rule": "ranges", "ranges": [[1, 3, 6]]}), "steps[0].split.ranges"),
    (
        "ranges-not-a-pair",
        _split({"rule": "ranges", "ranges": [{"min": 1, "max": 6}]}),
        "steps[0].split.ranges",
    ),
    ("ranges-mixed-types", _split({"rule": "ranges", "ranges": [[1, "z"]]}), "steps[0].split.ranges"),
    ("ranges-float", _split({"rule": "ranges", "ranges": [[1, 6.5]]}), "steps[0].split.ranges"),
    ("ranges-reversed", _split({"rule": "ranges", "ranges": [[6, 1]]}), "steps[0].split.ranges"),
    ("ranges-overlap", _split({"rule": "ranges", "ranges": [[1, 4], [3, 6]]}), "steps[0].split.ranges"),
    ("ranges-leave-ids-out", _split({"rule": "ranges", "ranges": [[1, 3]]}), "steps[0].split.ranges"),
    ("ranges-match-no-id", _split({"rule": "ranges", "ranges": [[1, 6], [7, 9]]}), "steps[0].split.ranges"),
    ("query-size-missing", _split({"rule": "query"}), "steps[0].split.max_group_size"),
    ("query-size-zero", _split({"rule": "query", "max_group_size": 0}), "steps[0].split.max_group_size"),
    ("query-size-text", _split({"rule": "query", "max_group_size": "3"}), "steps[0].split.max_group_size"),
    ("query-size-bool", _split({"rule": "query", "max_group_size": True}), "steps[0].split.max_group_size"),
    (
        "query-min-groups-zero",
        _split({"rule": "query", "max_group_size": 3, "min_groups": 0}),
        "steps[0].split.min_groups",
    ),
    (
        "query-min-groups-text",
        _split({"rule": "query", "max_group_size": 3, "min_groups": "2"}),
        "steps[0].split.min_groups",
    ),
    (
        "query-min-groups-over-ids",
        _split({"rule": "query", "max_group_size": 3, "min_groups": 7}),
        "steps[0].split.min_groups",
    ),
    ("query-unknown-key", _split({"rule": "query", "max_group_size": 3, "size": 2}), "steps[0].split.size"),
    # the group rule of a label (`per`) and the other label settings
    ("per-unknown", _set("pipeline.coadd.per", "chunk"), "pipeline.coadd.per"),
    ("label-command-missing", _set("pipeline.isr.command", ...), "pipeline.isr.command"),
    ("label-memory-zero", _set("pipeline.isr.memory_mb", 0), "pipeline.isr.memory_mb"),
    ("label-cores-text", _set("pipeline.isr.cores", "2"), "pipeline.isr.cores"),
    ("label-walltime-negative", _set("pipeline.isr.walltime_s", -1), "pipeline.isr.walltime_s"),
    ("label-disk-zero", _set("pipeline.isr.disk_mb", 0), "pipeline.isr.disk_mb"),
    ("label-priority-negative", _set("pipeline.isr.priority", -1), "pipeline.isr.priority"),
    ("label-parents-not-a-list", _set("pipeline.calibrate.parents", "isr"), "pipeline.calibrate.parents"),
    ("label-unknown-key", _set("pipeline.isr.colour", "red"), "pipeline.isr"),
    ("label-sites-unknown-key", _set("pipeline.isr.sites", {"avoid": ["X"]}), "pipeline.isr.sites.avoid"),
    # step options
    ("step-name-missing", _set("steps.0.name", ...), "steps[0].name"),
    ("step-name-bad", _set("steps.0.name", "step one"), "steps[0].name"),
    ("step-name-twice", _set("steps.1.name", "step1"), "steps[1]"),
    ("step-labels-missing", _set("steps.0.labels", ...), "steps[0].labels"),
    ("step-labels-empty", _set("steps.0.labels", []), "steps[0].labels"),
    ("step-labels-unknown", _set("steps.0.labels", ["isr", "nope"]), "steps[0].labels"),
    ("step-labels-not-names", _set("steps.0.labels", [{"isr": 1}]), "steps[0].labels[0]"),
    ("step-labels-twice", _set("steps.0.labels", ["isr", "isr"]), "steps[0].labels"),
    ("step-max-running-negative", _set("steps.0.max_running_groups", -1), "steps[0].max_running_groups"),
    ("step-max-running-text", _set("steps.0.max_running_groups", "2"), "steps[0].max_running_groups"),
    ("step-breakpoint-text", _set("steps.1.breakpoint", "yes"), "steps[1].breakpoint"),
    ("step-unknown-key", _set("steps.0.when", "later"), "steps[0]"),
    ("steps-empty", _set("steps", []), "steps"),
    ("step-not-a-mapping", _set("steps", ["step1"]), "steps[0]"),
    # overrides, step-wide and per label
    ("overrides-not-a-mapping", _override(3000), "steps[0].overrides"),
    ("overrides-unknown-key", _override({"ram": 3000}), "steps[0].overrides.ram"),
    ("overrides-memory-zero", _override({"memory_mb": 0}), "steps[0].overrides.memory_mb"),
    ("overrides-cores-text", _override({"cores": "4"}), "steps[0].overrides.cores"),
    ("overrides-walltime-bool", _override({"walltime_s": True}), "steps[0].overrides.walltime_s"),
    ("overrides-disk-negative", _override({"disk_mb": -1}), "steps[0].overrides.disk_mb"),
    ("overrides-priority-negative", _override({"priority": -1}), "steps[0].overrides.priority"),
    ("overrides-sites-bad", _override({"sites": {"avoid": ["X"]}}), "steps[0].overrides.sites.avoid"),
    ("overrides-labels-not-a-mapping", _override({"labels": ["isr"]}), "steps[0].overrides.labels"),
    (
        "overrides-labels-other-step",
        _override({"labels": {"coadd": {"memory_mb": 1}}}),
        "steps[0].overrides.labels",
    ),
    ("overrides-label-not-a-mapping", _override({"labels": {"isr": 5000}}), "steps[0].overrides.labels.isr"),
    (
        "overrides-label-memory-zero",
        _override({"labels": {"isr": {"memory_mb": 0}}}),
        "steps[0].overrides.labels.isr.memory_mb",
    ),
    (
        "overrides-label-nested-labels",
        _override({"labels": {"isr": {"labels": {}}}}),
        "steps[0].overrides.labels.isr.labels",
    ),
    (
        "overrides-label-sites-bad",
        _override({"labels": {"isr": {"sites": {"include": "X"}}}}),
        "steps[0].overrides.labels.isr.sites.include",
    ),
    # data sources
    ("data-missing", _set("data", ...), "data"),
    ("data-two-sources", _data({"ids": [1], "ranges": [[1, 2]]}), "data"),
    ("data-unknown-source", _data({"visits": [1, 2]}), "data.visits"),
    ("ids-not-a-list", _data({"ids": "1,2"}), "data.ids"),
    ("ids-empty", _data({"ids": []}), "data.ids"),
    ("ids-float", _data({"ids": [1, 2.5]}), "data.ids"),
    ("ids-mixed-types", _data({"ids": [1, "a"]}), "data.ids"),
    ("ids-twice", _data({"ids": [1, 2, 2]}), "data.ids"),
    ("ids-nested", _data({"ids": [[1, 2]]}), "data.ids"),
    ("data-ranges-not-a-list", _data({"ranges": "1-6"}), "data.ranges"),
    ("data-ranges-empty", _data({"ranges": []}), "data.ranges"),
    ("data-ranges-bad-pair", _data({"ranges": [[1]]}), "data.ranges"),
    ("data-ranges-reversed", _data({"ranges": [[6, 1]]}), "data.ranges"),
    ("data-ranges-overlap", _data({"ranges": [[1, 4], [3, 6]]}), "data.ranges"),
    ("file-not-a-mapping", _data({"file": "visits.csv"}), "data.file"),
    ("file-path-missing", _data({"file": {"format": "csv"}}), "data.file.path"),
    ("file-path-absolute", _data({"file": {"path": "/etc/passwd"}}), "data.file.path"),
    ("file-path-escapes", _data({"file": {"path": "../secrets.csv"}}), "data.file.path"),
    ("file-format-unknown", _data({"file": {"path": "v.csv", "format": "xml"}}), "data.file.format"),
    ("file-column-not-a-name", _data({"file": {"path": "v.csv", "column": 3}}), "data.file.column"),
    ("file-unknown-key", _data({"file": {"path": "v.csv", "sheet": 1}}), "data.file.sheet"),
    ("query-not-a-mapping", _data({"query": "visits"}), "data.query"),
    ("query-catalog-missing", _data({"query": {"where": {}}}), "data.query.catalog"),
    ("query-catalog-unknown", _data({"query": {"catalog": "nope"}}), "data.query.catalog"),
    ("query-unknown-key", _data({"query": {"catalog": "nope", "limit": 3}}), "data.query.limit"),
    # notifications
    ("notifications-not-a-mapping", _set("notifications", "http://x"), "notifications"),
    ("notifications-unknown-key", _set("notifications.email", "a@b"), "notifications.email"),
    ("webhook-not-http", _set("notifications.webhook", "ftp://x"), "notifications.webhook"),
    ("webhook-not-text", _set("notifications.webhook", 3), "notifications.webhook"),
    ("events-not-a-list", _set("notifications.events", "failure"), "notifications.events"),
    ("events-unknown", _set("notifications.events", ["failure", "explosion"]), "notifications.events"),
    ("events-not-names", _set("notifications.events", [{"failure": 1}]), "notifications.events[0]"),
    # stall setting
    ("stall-zero", _set("stall_after_s", 0), "stall_after_s"),
    ("stall-text", _set("stall_after_s", "1h"), "stall_after_s"),
    ("stall-bool", _set("stall_after_s", True), "stall_after_s"),
    # the rest of the top level
    ("name-bad", _set("name", "c 1"), "name"),
    ("priority-negative", _set("priority", -1), "priority"),
    ("dimension-bad", _set("dimension", "a b"), "dimension"),
    ("description-not-text", _set("description", ["x"]), "description"),
]


def _client(username: str = "alice", role: str = "user") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username=username, role=role)}")
    return client


def _spec(edit: Edit) -> str:
    spec = yaml.safe_load(spec_text())
    edit(spec)
    return yaml.safe_dump(spec, sort_keys=False)


def test_the_base_spec_is_accepted():
    response = _client().post(
        "/api/v1/campaigns/", {"spec": _spec(lambda s: None), "comment": ""}, format="json"
    )
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(("edit", "field"), [(e, f) for _, e, f in CASES], ids=[c for c, _, _ in CASES])
def test_a_malformed_rule_is_a_400_naming_its_field(edit, field):
    response = _client().post("/api/v1/campaigns/", {"spec": _spec(edit), "comment": ""}, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["field"] == field, body
    assert body["detail"]
    assert not Campaign.objects.exists()


def test_an_unknown_top_level_key_is_named():
    spec = spec_text() + "extra: 1\n"
    body = _client().post("/api/v1/campaigns/", {"spec": spec}, format="json").json()
    assert "extra" in body["detail"]


def test_a_comment_over_its_column_is_a_400():
    response = _client().post(
        "/api/v1/campaigns/", {"spec": spec_text(), "comment": "x" * 301}, format="json"
    )
    assert (response.status_code, response.json()["field"]) == (400, "comment")


# --- rescue bodies -------------------------------------------------------------------------------

RESCUE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("overrides-not-an-object", {"overrides": [1]}, "overrides"),
    ("overrides-unknown-key", {"overrides": {"ram": 1}}, "overrides.ram"),
    ("overrides-memory-zero", {"overrides": {"memory_mb": 0}}, "overrides.memory_mb"),
    ("overrides-walltime-text", {"overrides": {"walltime_s": "1"}}, "overrides.walltime_s"),
    ("overrides-cores-zero", {"overrides": {"cores": 0}}, "overrides.cores"),
    ("overrides-disk-negative", {"overrides": {"disk_mb": -5}}, "overrides.disk_mb"),
    ("overrides-priority-negative", {"overrides": {"priority": -1}}, "overrides.priority"),
    ("overrides-sites-bad", {"overrides": {"sites": {"avoid": ["X"]}}}, "overrides.sites.avoid"),
    ("overrides-labels-not-an-object", {"overrides": {"labels": ["isr"]}}, "overrides.labels"),
    ("overrides-label-not-an-object", {"overrides": {"labels": {"isr": 3}}}, "overrides.labels.isr"),
    (
        "overrides-label-memory-zero",
        {"overrides": {"labels": {"isr": {"memory_mb": 0}}}},
        "overrides.labels.isr.memory_mb",
    ),
    ("selection-not-an-object", {"selection": [1]}, "selection"),
    ("selection-unknown-key", {"selection": {"queue": "X"}}, "selection.queue"),
    ("selection-error-not-text", {"selection": {"error": 137}}, "selection.error"),
    ("selection-label-not-text", {"selection": {"label": ["isr"]}}, "selection.label"),
    ("selection-site-not-text", {"selection": {"site": 3}}, "selection.site"),
    ("selection-data-min-float", {"selection": {"data_min": 1.5}}, "selection.data_min"),
    ("selection-data-max-object", {"selection": {"data_max": {"a": 1}}}, "selection.data_max"),
    ("selection-data-reversed", {"selection": {"data_min": 5, "data_max": 1}}, "selection.data_max"),
    ("selection-data-mixed-types", {"selection": {"data_min": 1, "data_max": "z"}}, "selection.data_max"),
    ("preview-not-a-bool", {"preview": "yes"}, ""),
]


@pytest.fixture
def launched_group(queue) -> Group:
    owner = _client()
    campaign_id = owner.post("/api/v1/campaigns/", {"spec": spec_text()}, format="json").json()["id"]
    assert owner.post(f"/api/v1/campaigns/{campaign_id}/launch/", format="json").status_code == 200
    return Group.objects.order_by("pk").first()


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in RESCUE_CASES], ids=[c for c, _, _ in RESCUE_CASES]
)
def test_a_malformed_rescue_is_a_400_naming_its_field(launched_group, body, field):
    response = _client("olga", "operator").post(
        f"/api/v1/campaign-groups/{launched_group.pk}/rescue/", body, format="json"
    )
    assert response.status_code == 400, response.json()
    assert response.json().get("field", "") == field or "preview" in response.json()["detail"]


# --- specs stored before the checks existed ------------------------------------------------------


def test_a_stored_spec_that_fails_todays_checks_is_a_409_naming_the_field_on_dry_run_and_launch():
    owner = _client()
    campaign_id = owner.post("/api/v1/campaigns/", {"spec": spec_text()}, format="json").json()["id"]
    old = yaml.safe_load(spec_text())
    old["steps"][0]["split"] = {"rule": "ranges"}  # what an unchecked create once accepted
    version = CampaignVersion.objects.get(campaign_id=campaign_id)
    version.spec_yaml = yaml.safe_dump(old)
    version.spec = {**version.spec, "steps": [{**version.spec["steps"][0], "split": {"rule": "ranges"}}]}
    version.save()
    for method, path in (("get", "dry-run"), ("post", "launch")):
        response = getattr(owner, method)(f"/api/v1/campaigns/{campaign_id}/{path}/", format="json")
        assert response.status_code == 409, response.json()
        assert response.json()["field"] == "steps[0].split.ranges"
    assert Campaign.objects.get().status == "draft"
