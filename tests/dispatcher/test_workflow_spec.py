"""Spec parsing and DAG checks: pure functions, no database."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.workflows import (
    ClusterRule,
    MemberRun,
    NewJob,
    QueueLimits,
    WorkflowInvalid,
    WorkflowTooLarge,
    cluster_command,
    cluster_markers,
    cluster_rules,
    cluster_rules_parse,
    dag_check_queues,
    dag_clusters,
    dag_find_cycle,
    dag_validate,
    spec_from_jobs,
    spec_load,
    spec_parse,
)

CAPS = {"max_jobs": 200_000, "max_edges": 2_000_000}

EXPLICIT_YAML = """
name: explicit
priority: 700
defaults:
  resources: {memory_mb: 1500, walltime_s: 600}
  environment: {BUTLER: /repo}
labels:
  calibrate:
    resources: {memory_mb: 4000}
    max_attempts: 5
overrides:
  coadd:
    resources: {cores: 4}
jobs:
  - name: isr_1
    label: isr
    command: run isr 1
    data_id: {visit: 1}
    files:
      - {lfn: raw_1.fits, role: input}
  - name: calibrate_1
    label: calibrate
    command: run calibrate 1
    depends_on: [isr_1]
    environment: {EXTRA: "yes"}
  - name: coadd
    label: coadd
    command: run coadd
    depends_on: [calibrate_1]
    resources: {cores: 1, memory_mb: 8000}
    container_image: lsst/stack:w_2024_10
"""

COMPACT_YAML = """
name: step1-step2
dimensions:
  visit: [1000, 1001, 1002]
  detector: {range: [0, 4]}
labels:
  isr:
    command: pipetask run -t isr -d "visit={visit} AND detector={detector}"
    over: [visit, detector]
    resources: {memory_mb: 3000}
  calibrate:
    command: pipetask run -t calibrate -d "visit={visit} AND detector={detector}"
    over: [visit, detector]
    after: [isr]
  makeVisitTable:
    command: pipetask run -t makeVisitTable -d "visit={visit}"
    over: [visit]
    after: [calibrate]
  summary:
    command: summarise {label}
    after: [makeVisitTable]
cluster: {isr: 2}
"""

MIXED_JSON = json.dumps(
    {
        "name": "mixed",
        "labels": {
            "measure": {
                "command": "measure tract={tract} patch={patch}",
                "name": "measure-{tract}-{patch}",
                "data_ids": [{"tract": 1, "patch": 1}, {"tract": 1, "patch": 2}, {"tract": 2, "patch": 1}],
                "after": ["prepare"],
            }
        },
        "jobs": [
            {"name": "prepare-1", "label": "prepare", "command": "prep 1", "data_id": {"tract": 1}},
            {"name": "prepare-2", "label": "prepare", "command": "prep 2", "data_id": {"tract": 2}},
            {"name": "final", "label": "final", "command": "final", "depends_on": ["measure-1-1"]},
        ],
    }
)

FORMS = {
    "explicit-yaml": (EXPLICIT_YAML, "application/yaml"),
    "explicit-json": (json.dumps(yaml.safe_load(EXPLICIT_YAML)), "application/json"),
    "compact-yaml": (COMPACT_YAML, "application/yaml"),
    "compact-json": (json.dumps(yaml.safe_load(COMPACT_YAML)), "application/json"),
    "mixed-json": (MIXED_JSON, "application/json"),
}


def parse(text: str, content_type: str = "") -> Any:
    return spec_parse(spec_load(text, content_type=content_type, max_bytes=10**8, max_depth=32), **CAPS)


def shape(jobs: list[NewJob]) -> list[tuple[Any, ...]]:
    return [
        (
            j.name,
            j.label,
            j.command,
            tuple(j.parents),
            j.memory_mb,
            j.cores,
            j.walltime_s,
            j.disk_mb,
            j.priority,
            dict(j.environment or {}),
            j.container_image,
            dict(j.data_id or {}),
            [dict(f) for f in j.files],
        )
        for j in jobs
    ]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_spec_form_round_trips_through_the_explicit_form(form: str) -> None:
    text, content_type = FORMS[form]
    parsed = parse(text, content_type)
    explicit = spec_from_jobs(
        name=parsed.name,
        jobs=parsed.jobs,
        priority=parsed.priority,
        labels=parsed.labels,
        cluster=parsed.cluster,
    )

    for dumped, kind in (
        (yaml.safe_dump(explicit), "application/yaml"),
        (json.dumps(explicit), "application/json"),
    ):
        again = parse(dumped, kind)
        assert shape(again.jobs) == shape(parsed.jobs)
        assert again.labels == parsed.labels
        assert again.cluster == parsed.cluster
        assert (again.name, again.priority) == (parsed.name, parsed.priority)


def test_settings_layer_builtin_defaults_label_job_override() -> None:
    jobs = {j.name: j for j in parse(EXPLICIT_YAML).jobs}

    assert (jobs["isr_1"].memory_mb, jobs["isr_1"].walltime_s, jobs["isr_1"].disk_mb) == (1500, 600, 1000)
    assert jobs["calibrate_1"].memory_mb == 4000  # label default beats spec default
    assert jobs["calibrate_1"].environment == {"BUTLER": "/repo", "EXTRA": "yes"}
    assert jobs["coadd"].memory_mb == 8000  # the job's own value beats defaults
    assert jobs["coadd"].cores == 4  # an override beats the job's own value
    assert jobs["isr_1"].files == [{"lfn": "raw_1.fits", "role": "input"}]


def test_compact_form_fans_out_and_matches_by_shared_keys() -> None:
    parsed = parse(COMPACT_YAML)
    by_label: dict[str, list[NewJob]] = {}
    for job in parsed.jobs:
        by_label.setdefault(job.label, []).append(job)

    assert {label: len(jobs) for label, jobs in by_label.items()} == {
        "isr": 12,
        "calibrate": 12,
        "makeVisitTable": 3,
        "summary": 1,
    }
    calibrate = next(j for j in by_label["calibrate"] if j.data_id == {"visit": 1001, "detector": 2})
    assert calibrate.parents == ["isr_1001_2"]  # one-to-one on shared keys
    assert calibrate.command == 'pipetask run -t calibrate -d "visit=1001 AND detector=2"'
    visit = next(j for j in by_label["makeVisitTable"] if j.data_id == {"visit": 1002})
    assert sorted(visit.parents) == [f"calibrate_1002_{d}" for d in range(4)]  # gather on a subset
    assert sorted(by_label["summary"][0].parents) == [
        "makeVisitTable_1000",
        "makeVisitTable_1001",
        "makeVisitTable_1002",
    ]
    assert by_label["isr"][0].memory_mb == 3000
    assert parsed.cluster == [
        ClusterRule(labels=("isr",), max_members=2, connected=False, field="cluster.isr")
    ]


def test_compact_labels_can_depend_on_explicit_jobs_by_data_id() -> None:
    jobs = {j.name: j for j in parse(MIXED_JSON, "application/json").jobs}
    assert jobs["measure-1-2"].parents == ["prepare-1"]
    assert jobs["measure-2-1"].parents == ["prepare-2"]
    assert jobs["final"].parents == ["measure-1-1"]


def test_step1_of_a_data_release_fits_on_a_screen() -> None:
    spec = """
name: dc2-step1
dimensions: {visit: {range: [0, 61]}, detector: {range: [0, 189]}}
labels:
  isr: {command: "isr {visit} {detector}", over: [visit, detector]}
  characterizeImage: {command: "char {visit} {detector}", over: [visit, detector], after: [isr]}
  calibrate: {command: "cal {visit} {detector}", over: [visit, detector], after: [characterizeImage]}
  writeSourceTable: {command: "wst {visit} {detector}", over: [visit, detector], after: [calibrate]}
  transformSourceTable: {command: "tst {visit}", over: [visit], after: [writeSourceTable]}
"""
    parsed = parse(spec)
    assert len(parsed.jobs) == 4 * 61 * 189 + 61
    assert dag_validate(parsed.jobs, **CAPS) == 3 * 61 * 189 + 61 * 189


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("jobs: []\nfoo: 1\n", "foo", "unknown key 'foo'"),
        ("jobs:\n  - {name: a, label: x}\n", "jobs[0].command", "must be a string"),
        (
            "jobs:\n  - {name: a, label: x, command: t, resources: {memory_mb: 0}}\n",
            "jobs[0].resources.memory_mb",
            "positive",
        ),
        (
            "labels:\n  x: {command: 'run {visit}', over: [detector]}\ndimensions: {detector: [1]}\n",
            "labels.x.command",
            "{visit}",
        ),
        ("labels:\n  x: {command: 'run', over: [visit]}\n", "labels.x.over", "not in dimensions"),
        (
            "labels:\n  x: {command: 'run', over: {v: {range: [0, 2]}}, after: [nope]}\n",
            "labels.x.after",
            "has no jobs",
        ),
        ("labels:\n  x: {over: [v]}\n", "labels.x.command", "needs a command"),
        ("cluster: {nope: 2}\njobs: [{name: a, label: x, command: t}]\n", "cluster.nope", "no jobs"),
        ("cluster: {x: 0}\njobs: [{name: a, label: x, command: t}]\n", "cluster.x", "positive"),
        ("dimensions: {v: [1, 1]}\n", "dimensions.v", "twice"),
    ],
)
def test_bad_specs_name_the_field(text: str, field: str, message: str) -> None:
    with pytest.raises(WorkflowInvalid, match=message) as caught:
        parse(text)
    assert caught.value.field == field


def test_malformed_yaml_names_line_and_column() -> None:
    text = "name: x\njobs:\n  - name: a\n    label: [unclosed\n  - name: b\n"
    with pytest.raises(WorkflowInvalid) as caught:
        spec_load(text, max_bytes=10_000, max_depth=32)
    assert caught.value.line == 5
    assert caught.value.column is not None
    assert "line 5" in caught.value.message


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        spec_load(
            '{\n  "name": "x",\n  "jobs": [}\n',
            content_type="application/json",
            max_bytes=10_000,
            max_depth=32,
        )
    assert (caught.value.line, caught.value.column) == (3, 12)


def test_yaml_dates_stay_strings_and_depth_is_bounded() -> None:
    assert spec_load("name: 2024-01-01\n", max_bytes=1000, max_depth=32)["name"] == "2024-01-01"
    deep = "a: " + "[" * 40 + "]" * 40 + "\n"
    with pytest.raises(WorkflowInvalid, match="deeper than 32"):
        spec_load(deep, max_bytes=1000, max_depth=32)
    with pytest.raises(WorkflowInvalid, match="top level"):
        spec_load("- a\n- b\n", max_bytes=1000, max_depth=32)


def test_caps_are_checked_before_anything_is_expanded() -> None:
    with pytest.raises(WorkflowTooLarge) as caught:
        spec_load(b"x" * 2000, max_bytes=1000, max_depth=32)
    assert caught.value.status_code == 413
    # 10^12 jobs: refused from the dimension sizes alone, without building a single one.
    huge = "dimensions: {a: {range: [0, 1000000]}, b: {range: [0, 1000000]}}\nlabels:\n  x: {command: t, over: [a, b]}\n"
    with pytest.raises(WorkflowTooLarge, match="limit is 200000"):
        parse(huge)


def test_find_cycle_reads_parent_to_child() -> None:
    # b depends on a, c on b, a on c.
    cycle = dag_find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    for parent, child in zip(cycle, cycle[1:], strict=False):
        assert parent in {"a": ["c"], "b": ["a"], "c": ["b"]}[child]


def test_queue_check_names_the_job_and_the_limit() -> None:
    queues = [QueueLimits("SMALL", 4000, 1, 86400, 20000), QueueLimits("BIG", 16000, 8, 3600, 20000)]
    dag_check_queues([NewJob(name="ok", label="x", command="t", memory_mb=16000, cores=8)], queues)
    with pytest.raises(
        WorkflowInvalid, match=r"'fat' requests memory_mb=32000 .* more than 16000 \(max_rss_mb of BIG\)"
    ):
        dag_check_queues([NewJob(name="fat", label="x", command="t", memory_mb=32000)], queues)
    with pytest.raises(WorkflowInvalid, match="no single queue offers all"):
        dag_check_queues(
            [NewJob(name="long", label="x", command="t", memory_mb=8000, walltime_s=7200)], queues
        )
    dag_check_queues([NewJob(name="any", label="x", command="t", memory_mb=10**6)], [])


def test_cluster_per_label_packs_jobs_and_members_keep_their_edges() -> None:
    jobs = [
        NewJob(name=f"a{i}", label="a", command=f"run a{i}", walltime_s=60, memory_mb=1000 + i)
        for i in range(5)
    ]
    jobs += [NewJob(name=f"b{i}", label="b", command=f"run b{i}", parents=[f"a{i}"]) for i in range(5)]

    nodes = dag_clusters(jobs, cluster_rules({"a": 2}))

    clusters = [j for j in nodes if j.label == "a_cluster"]
    assert [j.name for j in clusters] == ["a_cluster0", "a_cluster1", "a_cluster2"]
    first = clusters[0]
    assert (first.walltime_s, first.memory_mb, list(first.parents)) == (120, 1001, [])
    assert first.data_id == {"members": ["a0", "a1"]}
    assert "ailuro-cluster-member" in first.command
    members = {j.name: j.cluster for j in nodes if j.label == "a"}
    assert members == {
        "a0": "a_cluster0",
        "a1": "a_cluster0",
        "a2": "a_cluster1",
        "a3": "a_cluster1",
        "a4": "a_cluster2",
    }
    # A child waits for its own parent member, not for the whole cluster.
    assert {j.name: list(j.parents) for j in nodes if j.label == "b"} == {
        f"b{i}": [f"a{i}"] for i in range(5)
    }


def test_cluster_by_key_across_labels_is_one_connected_subgraph_per_key() -> None:
    jobs = [
        NewJob(
            name=f"{label}_{v}_{d}",
            label=label,
            command=f"{label} {v} {d}",
            walltime_s=100,
            data_id={"visit": v, "detector": d},
            parents=[f"isr_{v}_{d}"] if label == "calibrate" else [],
        )
        for label in ("isr", "calibrate")
        for v in (1, 2)
        for d in (0, 1)
    ]
    jobs.append(
        NewJob(name="table_1", label="table", command="t", parents=["calibrate_1_0", "calibrate_1_1"])
    )
    rules = cluster_rules_parse({"by": ["visit", "detector"], "labels": ["isr", "calibrate"]})

    nodes = dag_clusters(jobs, rules)

    clusters = {j.name: j for j in nodes if j.label == "isr+calibrate_cluster"}
    assert sorted(clusters) == [f"isr+calibrate_cluster_{v}_{d}" for v in (1, 2) for d in (0, 1)]
    one = clusters["isr+calibrate_cluster_1_0"]
    assert one.data_id == {"visit": 1, "detector": 0, "members": ["isr_1_0", "calibrate_1_0"]}
    assert (one.walltime_s, list(one.parents)) == (200, [])
    by_name = {j.name: j for j in nodes}
    assert by_name["table_1"].parents == ["calibrate_1_0", "calibrate_1_1"]
    assert by_name["calibrate_1_0"].cluster == "isr+calibrate_cluster_1_0"

    # By expected runtime: 150 s per cluster splits each key's chain into single members, which
    # stay plain jobs; by count, the same.
    for rule in ({"target_runtime_s": 150}, {"max_members": 1}):
        split = dag_clusters(
            jobs, cluster_rules_parse({"by": ["visit", "detector"], "labels": ["isr", "calibrate"], **rule})
        )
        assert not [j for j in split if j.cluster]


@pytest.mark.parametrize(
    ("cluster", "field", "message"),
    [
        ({"by": ["visit"], "labels": ["nope"]}, "cluster.labels", "no jobs"),
        ({"by": ["exposure"], "labels": ["isr"]}, "cluster.by", "no data-id key"),
        ({"by": ["visit"], "labels": ["isr"], "max_members": 0}, "cluster.max_members", "positive"),
        (
            {"by": ["visit"], "labels": ["isr"], "target_runtime_s": "1h"},
            "cluster.target_runtime_s",
            "positive",
        ),
        ({"by": ["visit"], "labels": ["isr"], "size": 2}, "cluster.size", "unknown key"),
        ({"by": "visit", "labels": ["isr"]}, "cluster.by", "list of names"),
        ({"labels": []}, "cluster.labels", "at least one"),
        ([{"labels": ["isr"]}, {"labels": ["isr"]}], "cluster[1].labels", "clustered twice"),
    ],
)
def test_cluster_rules_are_refused_naming_the_field(cluster: Any, field: str, message: str) -> None:
    jobs = [NewJob(name=f"isr_{v}", label="isr", command="t", data_id={"visit": v}) for v in (1, 2)]
    with pytest.raises(WorkflowInvalid, match=message) as caught:
        dag_clusters(jobs, cluster_rules_parse(cluster))
    assert caught.value.field == field


def test_cluster_names_stay_unique_when_key_values_read_alike() -> None:
    jobs = [
        NewJob(name=f"a{i}", label="a", command="t", data_id={"k": k}, parents=[f"a{i - 1}"] if i % 2 else [])
        for i, k in enumerate(["x y", "x y", "x-y", "x-y"])
    ]
    nodes = dag_clusters(jobs, cluster_rules_parse({"by": ["k"], "labels": ["a"]}))
    assert sorted(j.name for j in nodes if j.label == "a_cluster") == ["a_cluster_x-y", "a_cluster_x-y~1"]


def test_clusters_that_would_wait_for_each_other_are_refused() -> None:
    # a1 -> x -> a2, with a1 and a2 in one cluster: the cluster waits for x, x for the cluster.
    jobs = [
        NewJob(name="a1", label="a", command="t", data_id={"k": 1}),
        NewJob(name="x", label="x", command="t", parents=["a1"]),
        NewJob(name="a2", label="a", command="t", data_id={"k": 1}, parents=["x", "a1"]),
    ]
    with pytest.raises(WorkflowInvalid, match="wait for each other") as caught:
        dag_clusters(jobs, cluster_rules_parse({"by": ["k"], "labels": ["a"]}))
    assert caught.value.field == "cluster"
    with pytest.raises(WorkflowInvalid, match="wait for each other") as caught:
        dag_clusters(jobs, cluster_rules_parse({"a": 2}))
    assert caught.value.field == "cluster.a"


def test_cluster_payload_runs_members_in_dependency_order_and_skips_after_a_failure(tmp_path: Any) -> None:
    import subprocess

    runs = [
        MemberRun("child_of_bad", f"echo never > {tmp_path}/never", {}, ["bad"]),
        MemberRun("ok1", f"echo one > {tmp_path}/1", {}, []),
        MemberRun("bad", "exit 3", {}, ["ok1"]),
        MemberRun("ok2", f"echo $WHO > {tmp_path}/2", {"WHO": "two words"}, []),
        MemberRun("grandchild", "true", {}, ["child_of_bad"]),
    ]
    result = subprocess.run(["bash", "-c", cluster_command(runs)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 3
    assert result.stdout.splitlines() == [
        "ailuro-cluster-member ok1 exit=0",
        "ailuro-cluster-member bad exit=3",
        "ailuro-cluster-member child_of_bad skipped",
        "ailuro-cluster-member ok2 exit=0",
        "ailuro-cluster-member grandchild skipped",
    ]
    assert cluster_markers(result.stdout) == {
        "ok1": 0,
        "bad": 3,
        "child_of_bad": None,
        "ok2": 0,
        "grandchild": None,
    }
    assert (tmp_path / "2").read_text() == "two words\n"
    assert not (tmp_path / "never").exists()


# --- generated DAGs --------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[NewJob]:
    """Random DAGs: node i may depend only on nodes before it, so the graph is acyclic."""
    n = draw(st.integers(min_value=1, max_value=40))
    jobs = []
    for i in range(n):
        parents = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=min(i, 5))) if i else set()
        label = draw(st.sampled_from(["isr", "calibrate", "coadd"]))
        jobs.append(
            NewJob(name=f"j{i}", label=label, command="true", parents=[f"j{p}" for p in sorted(parents)])
        )
    order = draw(st.permutations(range(n)))
    return [jobs[i] for i in order]


@given(dags())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_dags_are_accepted_with_exact_edge_counts(jobs: list[NewJob]) -> None:
    expected = sum(len(j.parents) for j in jobs)
    assert dag_validate(jobs, **CAPS) == expected
    assert dag_find_cycle({j.name: j.parents for j in jobs}) is None


@given(dags(), st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_one_back_edge_is_rejected_with_the_cycle_named(jobs: list[NewJob], data: st.DataObject) -> None:
    by_name = {j.name: j for j in jobs}
    # Pick a path a -> ... -> b (b reachable from a, possibly a == b's ancestor at distance ≥ 1).
    children: dict[str, list[str]] = {j.name: [] for j in jobs}
    for j in jobs:
        for p in j.parents:
            children[p].append(j.name)
    with_children = [name for name, kids in children.items() if kids]
    if not with_children:
        a = data.draw(st.sampled_from(sorted(by_name)))
        b = a  # a self-loop is the shortest back edge
    else:
        a = data.draw(st.sampled_from(sorted(with_children)))
        b = data.draw(st.sampled_from(sorted(children[a])))
    # The back edge: a now depends on b, closing a -> b -> a.
    by_name[a].parents = [*by_name[a].parents, b]

    with pytest.raises(WorkflowInvalid) as caught:
        dag_validate(jobs, **CAPS)

    message = caught.value.message
    if a == b:
        assert "depends on itself" in message
        return
    assert message.startswith("dependency cycle: ")
    path = message.removeprefix("dependency cycle: ").split(" -> ")
    assert path[0] == path[-1]
    assert a in path
    assert b in path
    for parent, child in zip(path, path[1:], strict=False):
        assert parent in by_name[child].parents


# --- the published JSON Schema ---------------------------------------------------------------

SCHEMA_PATH = (
    __import__("pathlib").Path(__file__).resolve().parents[2]
    / "docs"
    / "reference"
    / "workflow-spec.schema.json"
)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_published_schema_accepts_every_form_and_the_explicit_rewrite(form: str) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    text, content_type = FORMS[form]
    data = spec_load(text, content_type=content_type, max_bytes=10**6, max_depth=32)
    jsonschema.validate(data, schema)
    parsed = spec_parse(data, **CAPS)
    jsonschema.validate(
        spec_from_jobs(
            name=parsed.name,
            jobs=parsed.jobs,
            priority=parsed.priority,
            labels=parsed.labels,
            cluster=parsed.cluster,
        ),
        schema,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"jobs": [{"name": "a", "label": "x"}]},
        {"jobs": [{"name": "a", "label": "x", "command": "t", "memroy_mb": 1}]},
        {"labels": {"x": {"over": ["v"]}}},
        {"cluster": {"x": 0}},
        {"dimensions": {"v": {"range": [1]}}},
    ],
)
def test_the_published_schema_and_the_parser_reject_the_same_mistakes(bad: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(WorkflowInvalid):
        spec_parse(bad, **CAPS)
