"""Data ids with several dimensions: spec checks, grouping, gathers, the dry run and the launch."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from campaigns.dataids import gather_groups, link_rows, product_ids, split_group_by, tuples_normalise
from campaigns.dry_run import campaign_dry_run
from campaigns.models import Group
from campaigns.queries import data_ids_load, group_jobs_plan
from campaigns.services import campaign_create, campaign_launch
from campaigns.spec import SpecInvalid, SpecTooLarge, config_resolve, jobs_plan, spec_parse
from campaigns.splitting import GroupPlan, SplitError
from tests.campaigns.conftest import spec_text
from tests.campaigns.dp02 import DP02_OVERLAPS, dp02_spec_text

BASE = """
name: md
dimensions: [visit, detector]
pipeline:
  isr: {command: "run isr {visit} {detector}"}
  summary: {command: "run summary {visit}", parents: [isr], per: [visit]}
data:
  product: {visit: {ranges: [[1, 3]]}, detector: [0, 1]}
steps:
  - name: step1
    labels: [isr, summary]
    group_by: [visit]
"""


def test_one_dimension_is_the_old_form():
    spec = spec_parse(spec_text())
    assert (spec["dimension"], spec["dimensions"]) == ("visit", ["visit"])
    assert spec["steps"][0]["dimensions"] == ["visit"]


def test_a_product_of_dimensions_is_counted_and_refused_before_it_is_made():
    text = BASE.replace(
        "product: {visit: {ranges: [[1, 3]]}, detector: [0, 1]}",
        "product: {visit: {ranges: [[1, 1000000]]}, detector: {ranges: [[1, 1000000]]}}",
    )
    t0 = time.perf_counter()
    with pytest.raises(SpecTooLarge) as exc:
        spec_parse(text)
    assert time.perf_counter() - t0 < 0.5
    assert exc.value.field == "data.product"
    assert "1000000000000 data ids" in str(exc.value)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("dimensions: [visit, detector]", "dimensions: [visit, visit]", "dimensions"),
        ("dimensions: [visit, detector]", "dimensions: [visit, group]", "dimensions"),
        ("dimensions: [visit, detector]", "dimension: visit\ndimensions: [visit]", "dimensions"),
        ("group_by: [visit]", "group_by: [band]", "steps[0].group_by"),
        ("per: [visit]", "per: [band]", "pipeline.summary.per"),
        ("per: [visit]", "per: 7", "pipeline.summary.per"),
        ("detector: [0, 1]", "detector: [0, 0]", "data.product"),
        ("detector: [0, 1]", "detector: []", "data.product"),
        (
            "{visit: {ranges: [[1, 3]]}, detector: [0, 1]}",
            "{detector: [0, 1], visit: [1], band: [g]}",
            "data.product",
        ),
        ("product: {visit: {ranges: [[1, 3]]}, detector: [0, 1]}", "ranges: [[1, 3]]", "data.ranges"),
        (
            "group_by: [visit]",
            "group_by: [visit]\n    split: {rule: query, max_group_size: 2}",
            "steps[0].split",
        ),
        ("group_by: [visit]", "split: {rule: values, values: [1]}", "steps[0].split"),
        ("group_by: [visit]", "gather: {}", "steps[0].gather"),
    ],
)
def test_every_new_field_is_checked_at_creation_naming_it(old, new, field):
    assert old in BASE
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(BASE.replace(old, new))
    assert exc.value.status_code == 400
    assert exc.value.field == field, str(exc.value)


def test_step_dimensions_data_and_gathers_are_checked():
    two = (
        BASE
        + """  - name: step2
    dimensions: [tract]
    labels: [isr]
"""
    )
    with pytest.raises(SpecInvalid, match="give the step its own data") as exc:
        spec_parse(two)
    assert exc.value.field == "steps[1].data"
    own = two + "    data: {product: {tract: [1, 2]}}\n"
    assert spec_parse(own)["steps"][1]["data"] == {"product": {"tract": [1, 2]}}
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(own.replace("labels: [isr]\n    data", "labels: [summary]\n    data"))
    assert exc.value.field == "pipeline.summary.per"
    gather = own + "    gather: {step: step1}\n"
    with pytest.raises(SpecInvalid, match="share no dimension") as exc:
        spec_parse(gather)
    assert exc.value.field == "steps[1].gather.links"
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(own + "    gather: {step: nope}\n")
    assert exc.value.field == "steps[1].gather.step"
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(own + "    gather: {links: [{tract: 1, visit: 1}, {tract: 2}]}\n")
    assert exc.value.field == "steps[1].gather.links"
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(own + "    gather: {links: [{tract: 1, band: g}]}\n")
    assert exc.value.field == "steps[1].gather.links"
    ok = spec_parse(own + "    gather: {links: [{tract: 1, visit: [1, 2]}, {tract: 2, visit: 3}]}\n")
    assert ok["steps"][1]["gather"]["step"] == "step1"
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(own + "    on: [visit]\n")  # YAML reads `on` as true: refused by name, not a 500
    assert "True" in str(exc.value)
    same = BASE + "  - name: step2\n    labels: [isr]\n    gather: {along: []}\n"
    with pytest.raises(SpecInvalid, match="share no dimension"):
        spec_parse(same)
    with pytest.raises(SpecInvalid) as exc:
        spec_parse(BASE + "  - name: step2\n    labels: [isr]\n    gather: {along: [band]}\n")
    assert exc.value.field == "steps[1].gather.along"


def test_group_by_groups_over_the_cap_are_refused_from_the_spec(settings):
    settings.CAMPAIGNS = {**settings.CAMPAIGNS, "MAX_GROUPS": 2}
    with pytest.raises(SpecTooLarge) as exc:
        spec_parse(BASE)
    assert exc.value.field == "steps[0].group_by"


def test_tuples_are_normalised_from_mappings_or_lists():
    dims = ["visit", "detector"]
    assert tuples_normalise([{"visit": 2, "detector": 1}, [1, 5]], dims) == [(1, 5), (2, 1)]
    with pytest.raises(SplitError, match="more than once"):
        tuples_normalise([[1, 1], {"visit": 1, "detector": 1}], dims)
    with pytest.raises(SplitError, match="mix integers and strings in dimension detector"):
        tuples_normalise([[1, 1], [1, "a"]], dims)
    with pytest.raises(SplitError, match="exactly the dimensions"):
        tuples_normalise([{"visit": 1}], dims)


def test_group_by_cuts_one_group_per_value_of_the_chosen_dimensions():
    ids = product_ids(
        {"visit": [1, 2], "band": ["g", "r"], "detector": [0, 1]}, ["visit", "band", "detector"]
    )
    plans = split_group_by(ids, ["visit", "band", "detector"], ["band"])
    assert [(p.name, len(p.data_ids)) for p in plans] == [("band-g", 4), ("band-r", 4)]
    plans = split_group_by(ids, ["visit", "band", "detector"], ["visit", "band"])
    assert [p.name for p in plans] == ["visit-1_band-g", "visit-1_band-r", "visit-2_band-g", "visit-2_band-r"]
    assert plans[0].data_ids == [(1, "g", 0), (1, "g", 1)]


def test_gathers_along_shared_dimensions_and_by_link_rows():
    visits = [GroupPlan(f"visit-{v}", [v]) for v in (1, 2, 3)]
    vd = [GroupPlan(f"v{v}", [(v, 0), (v, 1)]) for v in (1, 2, 3)]
    upstream, edges = gather_groups(visits, ["visit"], vd, ["visit", "detector"], along=["visit"])
    assert (upstream["visit-2"], edges) == (["v2"], 6)
    keys, links = link_rows([{"patch": 0, "visit": [1, 2]}, {"patch": 1, "visit": 3}], "links")
    patches = [GroupPlan("p01", [0, 1])]
    assert gather_groups(patches, ["patch"], visits, ["visit"], along=[], link_keys=keys, links=links) == (
        {"p01": ["visit-1", "visit-2", "visit-3"]},
        3,
    )
    with pytest.raises(SplitError, match="gathers no data id"):
        gather_groups(
            [GroupPlan("p2", [2])], ["patch"], visits, ["visit"], along=[], link_keys=keys, links=links
        )


def test_dimension_names_with_dots_are_placeholders_taken_literally():
    spec = spec_parse(
        BASE.replace("visit", "v.x").replace('"run isr {v.x} {detector}"', '"run {v.x} {vXx} {detector}"')
    )
    jobs = jobs_plan(config_resolve(spec, step="step1"), group="g", data_ids=[[1, 0]], attempt=1)
    assert jobs[0]["command"] == "run 1 {vXx} 0"


def test_a_label_per_some_dimensions_gathers_its_parents_in_the_group():
    spec = spec_parse(BASE)
    config = config_resolve(spec, step="step1")
    jobs = jobs_plan(config, group="visit-2", data_ids=[[2, 0], [2, 1]], attempt=1)
    assert [(j["name"], j["data_id"], j["parents"], j["command"]) for j in jobs] == [
        ("isr_2_0", {"visit": 2, "detector": 0}, [], "run isr 2 0"),
        ("isr_2_1", {"visit": 2, "detector": 1}, [], "run isr 2 1"),
        ("summary_2", {"visit": 2}, ["isr_2_0", "isr_2_1"], "run summary 2"),
    ]


@pytest.mark.django_db
def test_the_dp02_dry_run_shows_groups_times_jobs_per_label_per_step():
    dry = campaign_dry_run(spec_parse(dp02_spec_text()))
    assert dry.errors == []
    shapes = {s.name: {label: v["shape"] for label, v in s.labels.items()} for s in dry.steps}
    assert shapes == {
        "step1": {"isr": "20 × 9", "calibrate": "20 × 9"},
        "step2": {"visit_summary": "20 × 1"},
        "step3": {"make_warp": "4 × 3", "assemble_coadd": "4 × 3"},
    }
    step2, step3 = dry.steps[1], dry.steps[2]
    assert step2.gather == {"step": "step1", "along": ["visit"], "edges": 180, "group_edges": 20}
    assert step3.dimensions == ["tract", "patch", "band"]
    assert step3.gather is not None
    assert step3.gather["edges"] == sum(len(r["visit"]) for r in DP02_OVERLAPS)
    assert [s.jobs for s in dry.steps] == [360, 20, 24]


@pytest.mark.django_db
def test_the_dp02_launch_makes_the_groups_jobs_and_gathers(operator):
    campaign = campaign_create(owner=operator, spec_yaml=dp02_spec_text())
    outcome = campaign_launch(campaign_id=campaign.pk, actor="operator")
    assert outcome.message == "launched: 3 steps, 44 groups"
    spec = spec_parse(dp02_spec_text())
    v3 = Group.objects.get(step__name="step1", name="visit-3")
    assert v3.data_ids == [[3, d] for d in range(9)]
    # Every group counts its planned jobs from the launch: progress is over the whole campaign.
    totals = Group.objects.filter(campaign=campaign).values_list("step__name", "jobs_total")
    assert sorted(set(totals)) == [("step1", 18), ("step2", 1), ("step3", 6)]
    assert sum(n for _, n in totals) == 360 + 20 + 24
    from django.test import Client

    page = Client().get(f"/campaign/{campaign.pk}/", {"json": "1"}).json()
    assert page["progress"]["jobs_total"] == 404
    assert [sum(g["jobs_total"] for g in s["groups"]) for s in page["steps"]] == [360, 20, 24]
    jobs = group_jobs_plan(v3, spec)
    assert len(jobs) == 18
    assert jobs[5]["data_id"] == {"visit": 3, "detector": 5}
    assert jobs[5]["command"] == "run isr --visit 3 --detector 5"
    s2 = Group.objects.get(step__name="step2", name="visit-3")
    assert (s2.data_ids, s2.upstream) == ([3], ["visit-3"])
    page = Client().get(f"/campaign/group/{s2.pk}/").content.decode()
    assert "gathers from 1 group of the step before:\n  visit-3</p>" in page
    assert [j["data_id"] for j in group_jobs_plan(s2, spec)] == [{"visit": 3}]
    patch1 = Group.objects.get(step__name="step3", name="tract-0_patch-1")
    overlapping = sorted({v for r in DP02_OVERLAPS if r["patch"] == 1 for v in r["visit"]})
    assert patch1.upstream == [f"visit-{v}" for v in overlapping]
    names = [j["name"] for j in group_jobs_plan(patch1, spec)]
    assert names == [
        "make_warp_0_1_g",
        "make_warp_0_1_i",
        "make_warp_0_1_r",
        "assemble_coadd_0_1_g",
        "assemble_coadd_0_1_i",
        "assemble_coadd_0_1_r",
    ]


@pytest.mark.django_db
def test_a_catalog_query_returns_tuples_and_links_steps(settings):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_raw (visit integer, detector integer, band text)")
        cursor.execute("INSERT INTO test_raw VALUES (2, 1, 'r'), (1, 0, 'g'), (1, 1, 'g'), (2, 1, 'r')")
        cursor.execute("CREATE TABLE test_overlap (patch integer, visit integer)")
        cursor.execute("INSERT INTO test_overlap VALUES (0, 1), (0, 2), (1, 2)")
    settings.CAMPAIGNS = {
        **settings.CAMPAIGNS,
        "CATALOGS": {
            "raws": {"table": "test_raw", "columns": ["visit", "detector", "band"], "filters": ["band"]},
            "overlaps": {"table": "test_overlap", "columns": ["patch", "visit"]},
        },
    }
    query = {"query": {"catalog": "raws"}}
    assert data_ids_load(query, ["visit", "detector"]) == [(1, 0), (1, 1), (2, 1)]
    assert data_ids_load({"query": {"catalog": "raws", "where": {"band": "r"}}}, ["visit"]) == [2]
    with pytest.raises(SplitError, match="no column 'tract'"):
        data_ids_load(query, ["tract"])
    text = (
        BASE.replace("product: {visit: {ranges: [[1, 3]]}, detector: [0, 1]}", "query: {catalog: raws}")
        + """  - name: coadd
    dimensions: [patch]
    data: {product: {patch: [0, 1]}}
    labels: [isr]
    group_by: [patch]
    gather: {query: {catalog: overlaps}}
"""
    )
    dry = campaign_dry_run(spec_parse(text))
    assert dry.errors == []
    assert dry.data_ids == 3
    assert dry.steps[1].gather == {"step": "step1", "along": [], "edges": 4, "group_edges": 3}


def test_link_rows_and_tuple_ids_are_checked_at_creation(settings):
    settings.CAMPAIGNS = {**settings.CAMPAIGNS, "MAX_DATA_IDS": 1000}
    visits = ", ".join(str(v) for v in range(1001))
    huge = (
        BASE
        + "  - name: step2\n    dimensions: [tract]\n    data: {product: {tract: [1]}}\n    labels: [isr]\n"
        + f"    gather: {{links: [{{tract: 1, visit: [{visits}]}}]}}\n"
    )
    with pytest.raises(SpecTooLarge) as exc:
        spec_parse(huge)
    assert exc.value.field == "steps[1].gather.links"
    bad_ids = BASE.replace(
        "product: {visit: {ranges: [[1, 3]]}, detector: [0, 1]}", "ids: [[1, 0], {visit: 1, detector: 0}]"
    )
    with pytest.raises(SpecInvalid, match="more than once") as exc:
        spec_parse(bad_ids)
    assert exc.value.field == "data.ids"


@pytest.mark.django_db
def test_the_api_refuses_a_bad_dimension_field_with_400_and_a_huge_product_with_413(operator):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(operator)
    bad = client.post(
        "/api/v1/campaigns/", {"spec": BASE.replace("group_by: [visit]", "group_by: [band]")}, format="json"
    )
    assert bad.status_code == 400, bad.content
    assert bad.json()["field"] == "steps[0].group_by"
    huge = BASE.replace("detector: [0, 1]", "detector: {ranges: [[0, 999999999999]]}")
    t0 = time.perf_counter()
    response = client.post("/api/v1/campaigns/", {"spec": huge}, format="json")
    assert response.status_code == 413, response.content
    assert response.json()["field"] == "data.product"
    assert time.perf_counter() - t0 < 2
    created = client.post("/api/v1/campaigns/", {"spec": dp02_spec_text()}, format="json")
    assert created.status_code == 201, created.content
    dry = client.get(f"/api/v1/campaigns/{created.json()['id']}/dry-run/").json()
    step1 = dry["steps"][0]
    assert (step1["dimensions"], step1["group_by"]) == (["visit", "detector"], ["visit"])
    assert step1["labels"]["isr"] == {"groups": 20, "jobs": 180, "jobs_per_group": "9", "shape": "20 × 9"}
    assert dry["steps"][1]["gather"] == {"step": "step1", "along": ["visit"], "edges": 180, "group_edges": 20}


@pytest.mark.django_db
def test_the_dp02_campaign_runs_its_three_steps_with_data_ids_of_several_dimensions(
    operator, queue, django_capture_on_commit_callbacks
):
    from campaigns.advance import campaigns_advance_one_round
    from campaigns.models import GroupAttempt
    from dispatcher.models import Job
    from tests.campaigns.pilots import pilots_run

    campaign = campaign_create(owner=operator, spec_yaml=dp02_spec_text())
    campaign_launch(campaign_id=campaign.pk, actor="operator")

    def workflows() -> list[int]:
        return list(
            GroupAttempt.objects.filter(group__campaign=campaign).values_list("workflow_id", flat=True)
        )

    ran = []
    for _ in range(6):
        with django_capture_on_commit_callbacks(execute=True):
            campaigns_advance_one_round()
        ran.append(pilots_run(queue=queue.name, workflow_ids=workflows()))
    campaign.refresh_from_db()
    assert campaign.status == "done"
    assert sum(ran) == 360 + 20 + 24
    job = Job.objects.get(name="isr_3_5")
    assert (job.data_id, job.command) == ({"visit": 3, "detector": 5}, "run isr --visit 3 --detector 5")
    assert Job.objects.get(name="visit_summary_3").data_id == {"visit": 3}
    coadd = Job.objects.get(name="assemble_coadd_0_1_r")
    assert coadd.data_id == {"tract": 0, "patch": 1, "band": "r"}
    assert list(coadd.parent_edges.values_list("parent__name", flat=True)) == ["make_warp_0_1_r"]


@pytest.mark.django_db
def test_the_page_dry_run_shows_groups_times_jobs_per_label_per_step(operator):
    from django.test import Client

    campaign = campaign_create(owner=operator, spec_yaml=dp02_spec_text())
    client = Client()
    client.force_login(operator)
    response = client.post(
        f"/campaign/{campaign.pk}/action/",
        {"object": "campaign", "id": campaign.pk, "verb": "launch", "preview": "1"},
        follow=True,
    )
    text = response.content.decode()
    assert "step1 [visit × detector, by visit]: isr 20 × 9, calibrate 20 × 9" in text
    assert "step2 [visit, by visit]: visit_summary 20 × 1; gathers 180 ids of step1" in text
    assert "step3 [tract × patch × band, by tract × patch]: make_warp 4 × 3, assemble_coadd 4 × 3" in text


@pytest.mark.django_db
def test_data_of_several_dimensions_from_a_file(settings, tmp_path):
    settings.CAMPAIGNS = {**settings.CAMPAIGNS, "DATA_DIR": tmp_path}
    (tmp_path / "raws.csv").write_text("band,visit,detector\nr,2,1\ng,1,0\n")
    (tmp_path / "short.csv").write_text("visit,detector\n1,0\n2\n")
    (tmp_path / "raws.json").write_text('[{"visit": 2, "detector": 1}, [1, 0]]')
    dims = ["visit", "detector"]
    assert data_ids_load({"file": {"path": "raws.csv"}}, dims) == [(1, 0), (2, 1)]
    assert data_ids_load({"file": {"path": "raws.json", "format": "json"}}, dims) == [(1, 0), (2, 1)]
    with pytest.raises(SplitError, match="line 3 of the CSV data file has fewer columns"):
        data_ids_load({"file": {"path": "short.csv"}}, dims)
    with pytest.raises(SplitError, match="no column 'exposure'"):
        data_ids_load({"file": {"path": "raws.csv"}}, ["visit", "exposure"])


def test_link_rows_with_keys_of_mixed_types_are_refused_by_name():
    with pytest.raises(SplitError, match=r"links\[1\] has keys"):
        link_rows([{"patch": 1, "visit": 2}, {1: 2, "visit": 3}], "links")


@pytest.mark.django_db
def test_specs_and_configs_stored_before_dimensions_still_plan_the_same():
    spec = spec_parse(spec_text(n=6, size=3))
    old = {k: v for k, v in spec.items() if k != "dimensions"}
    old["steps"] = [
        {k: v for k, v in s.items() if k not in ("dimensions", "data", "group_by", "gather")}
        for s in spec["steps"]
    ]
    assert campaign_dry_run(old).as_dict() == campaign_dry_run(spec).as_dict()
    config = config_resolve(old, step="step1")
    legacy = {k: v for k, v in config.items() if k != "dimensions"}
    jobs = jobs_plan(legacy, group="1-3", data_ids=[1, 2, 3], attempt=1)
    assert [(j["name"], j["parents"], j["data_id"], j["command"]) for j in jobs[:4]] == [
        ("isr_1", [], {"visit": 1}, "run isr 1"),
        ("isr_2", [], {"visit": 2}, "run isr 2"),
        ("isr_3", [], {"visit": 3}, "run isr 3"),
        ("calibrate_1", ["isr_1"], {"visit": 1}, "run calibrate 1"),
    ]


@pytest.mark.django_db
def test_odd_values_are_refused_or_planned_never_a_crash():
    with pytest.raises(SpecInvalid, match="a label is a name"):
        spec_parse(BASE.replace("labels: [isr, summary]", "labels: [isr, [summary]]"))
    with pytest.raises(SpecInvalid, match="unknown key"):
        spec_parse(BASE.replace("  isr: {command:", "  isr: {1: 2, command:"))
    mixed = (
        BASE
        + "  - name: step2\n    dimensions: [tract]\n    data: {product: {tract: [1]}}\n    labels: [isr]\n"
        + "    gather: {links: [{tract: 1, visit: [1, x]}]}\n"
    )
    dry = campaign_dry_run(spec_parse(mixed))
    assert dry.errors == []
    assert dry.steps[1].gather == {"step": "step1", "along": [], "edges": 2, "group_edges": 1}
