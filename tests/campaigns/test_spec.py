"""campaigns.spec: parsing names the bad field; configs layer overrides; job plans wire parents."""

from __future__ import annotations

import pytest

from campaigns.spec import SpecInvalid, config_resolve, downstream_of, jobs_plan, spec_parse
from tests.campaigns.conftest import spec_text


def test_a_valid_spec_is_normalised():
    spec = spec_parse(spec_text())
    assert spec["name"] == "c1"
    assert spec["pipeline"]["calibrate"]["parents"] == ["isr"]
    assert [s["name"] for s in spec["steps"]] == ["step1", "step2"]
    assert spec["notifications"]["events"] == ["failure", "stall", "completion"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("name: c1", "name: 'bad name'"), "name must match"),
        (lambda t: t.replace("parents: [isr]", "parents: [nope]"), "unknown label 'nope'"),
        (lambda t: t.replace("labels: [coadd]", "labels: [coad]"), r"steps\[1\].labels names unknown label"),
        (lambda t: t.replace("rule: query, max_group_size: 3", "rule: chunks"), r"steps\[0\].split"),
        (
            lambda t: t.replace("memory_mb: 3000", "memory_mb: -1"),
            "pipeline.coadd.memory_mb must be an integer",
        ),
        (lambda t: t.replace("ranges: [[1, 6]]", "ranges: [[1, 6]]\n  ids: [1]"), "exactly one of"),
        (lambda t: t + "extra: 1\n", "unknown key"),
        (lambda t: t.replace('webhook: ""', "webhook: ftp://x"), "webhook must be an http"),
        (lambda t: "[1, 2", "not valid YAML"),
    ],
)
def test_bad_specs_are_refused_with_the_field_named(edit, message):
    with pytest.raises(SpecInvalid, match=message):
        spec_parse(edit(spec_text()))


def test_a_label_cycle_is_refused():
    text = spec_text().replace(
        'isr: {command: "run isr {data_id}"', 'isr: {command: "run isr {data_id}", parents: [calibrate]'
    )
    with pytest.raises(SpecInvalid, match="cycle"):
        spec_parse(text)


def test_overrides_layer_step_label_and_attempt():
    text = spec_text().replace(
        "    max_running_groups: 0\n",
        "    max_running_groups: 0\n    overrides: {memory_mb: 3000, labels: {calibrate: {memory_mb: 5000}}}\n",
    )
    spec = spec_parse(text)
    config = config_resolve(spec, step="step1", overrides={"jobs": {"isr_2": {"memory_mb": 9000}}})
    assert (config["labels"]["isr"]["memory_mb"], config["labels"]["calibrate"]["memory_mb"]) == (3000, 5000)
    assert "coadd" not in config["labels"]
    jobs = {j["name"]: j for j in jobs_plan(config, group="g", data_ids=[1, 2], attempt=1)}
    assert (jobs["isr_1"]["memory_mb"], jobs["isr_2"]["memory_mb"]) == (3000, 9000)
    assert jobs["calibrate_2"]["parents"] == ["isr_2"]
    assert jobs["isr_2"]["command"] == "run isr 2"
    assert jobs["isr_2"]["data_id"] == {"visit": 2}


def test_a_group_label_gathers_every_job_of_its_parent_and_parents_of_other_steps_are_dropped():
    spec = spec_parse(spec_text().replace("labels: [coadd]", "labels: [calibrate, coadd]"))
    config = config_resolve(spec, step="step2")
    jobs = {j["name"]: j for j in jobs_plan(config, group="g7", data_ids=[4, 5], attempt=3)}
    assert jobs["calibrate_4"]["parents"] == []  # isr ran in step1
    assert jobs["coadd"]["parents"] == ["calibrate_4", "calibrate_5"]
    assert jobs["coadd"]["command"] == "run coadd g7"
    assert downstream_of(list(jobs.values()), {"calibrate_4"}) == {"coadd"}


def test_only_keeps_the_rescued_jobs_and_cuts_satisfied_parents():
    spec = spec_parse(spec_text())
    config = config_resolve(spec, step="step1", overrides={"only": ["calibrate_2"]})
    assert jobs_plan(config, group="g", data_ids=[1, 2], attempt=2) == [
        {
            "name": "calibrate_2",
            "label": "calibrate",
            "command": "run calibrate 2",
            "parents": [],
            "data_id": {"visit": 2},
            "memory_mb": 2000,
            "cores": 1,
            "walltime_s": 3600,
            "disk_mb": 1000,
            "priority": 500,
        }
    ]


def test_sites_layer_key_by_key_from_pipeline_to_step_to_attempt():
    text = (
        spec_text()
        .replace("walltime_s: 600}", 'walltime_s: 600, sites: {exclude: ["*_TEST"]}}')
        .replace(
            "    max_running_groups: 0\n",
            "    max_running_groups: 0\n"
            '    overrides: {sites: {include: ["SLAC*"]}, labels: {calibrate: {sites: {include: ["IN2P3"]}}}}\n',
        )
    )
    spec = spec_parse(text)

    step = config_resolve(spec, step="step1")
    assert step["labels"]["isr"]["sites"] == {"exclude": ["*_TEST"], "include": ["SLAC*"]}
    assert step["labels"]["calibrate"]["sites"] == {"include": ["IN2P3"]}
    rescue = config_resolve(spec, step="step1", overrides={"sites": {"exclude": ["SLAC_Rubin"]}})
    assert rescue["labels"]["isr"]["sites"] == {"exclude": ["SLAC_Rubin"], "include": ["SLAC*"]}
    assert "sites" not in config_resolve(spec, step="step2")["labels"]["coadd"]


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ('walltime_s: 600, sites: "SLAC"}', "pipeline.isr.sites must be a mapping"),
        ('walltime_s: 600, sites: {include: [""]}}', r"pipeline.isr.sites.include\[0\]"),
        ("walltime_s: 600, sites: {avoid: [X]}}", "unknown key .avoid. in pipeline.isr.sites"),
    ],
)
def test_malformed_sites_in_a_campaign_spec_are_refused_naming_the_field(replacement, message):
    with pytest.raises(SpecInvalid, match=message):
        spec_parse(spec_text().replace("walltime_s: 600}", replacement))
