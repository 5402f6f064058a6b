"""Clustering: jobs run together in one payload, each keeping its own job row and state
(docs/decisions/0010-clusters-of-member-jobs.md).

A cluster job is dispatched in place of its members. Its payload (`cluster_command`) runs the
members in dependency order, skips a member whose parent in the cluster failed or was skipped, and
prints one marker line per member. The members stay jobs of their own labels: their edges stay as
the spec wrote them, so a child outside the cluster waits for its own parent member only.

Spec forms (`cluster_rules_parse`):

* `cluster: {by: [visit, detector], labels: [isr, calibrate], max_members: N, target_runtime_s: T}`
  (or a list of such mappings): the jobs of `labels` sharing the values of the `by` data-id keys,
  split into connected subgraphs, then into clusters of at most N members or about T seconds of
  their walltime requests, in dependency order;
* `cluster: {label: N}`: N jobs of one label at a time, in spec order.

Pure: plain data in, plain data out.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dispatcher.workflows.dag import NewJob, WorkflowInvalid, dag_find_cycle

CLUSTER_MARKER = "ailuro-cluster-member"
_RULE_KEYS = frozenset({"by", "labels", "max_members", "target_runtime_s"})


@dataclass(frozen=True)
class ClusterRule:
    """One clustering rule of a spec. `by` empty and `connected` False is the per-label form."""

    labels: tuple[str, ...]
    by: tuple[str, ...] = ()
    max_members: int | None = None
    target_runtime_s: int | None = None
    connected: bool = True
    field: str = "cluster"

    def as_spec(self) -> dict[str, Any]:
        """The rule as a spec writes it (`spec_from_jobs`)."""
        if not self.connected:
            return {self.labels[0]: self.max_members}
        out: dict[str, Any] = {"labels": list(self.labels)}
        if self.by:
            out["by"] = list(self.by)
        if self.max_members is not None:
            out["max_members"] = self.max_members
        if self.target_runtime_s is not None:
            out["target_runtime_s"] = self.target_runtime_s
        return out


def _positive(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WorkflowInvalid(f"{where} must be a positive integer, got {value!r}", field=where)
    return value


def _names(value: Any, where: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise WorkflowInvalid(f"{where} must be a list of names", field=where)
    if required and not value:
        raise WorkflowInvalid(f"{where} must name at least one label", field=where)
    if len(set(value)) != len(value):
        raise WorkflowInvalid(f"{where} names something twice", field=where)
    return tuple(value)


def _rule_parse(entry: Mapping[str, Any], where: str) -> ClusterRule:
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise WorkflowInvalid(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_RULE_KEYS))})",
            field=f"{where}.{unknown[0]}",
        )
    labels = _names(entry.get("labels"), f"{where}.labels", required=True)
    by = _names(entry.get("by"), f"{where}.by", required=False)
    max_members = entry.get("max_members")
    runtime = entry.get("target_runtime_s")
    return ClusterRule(
        labels=labels,
        by=by,
        max_members=None if max_members is None else _positive(max_members, f"{where}.max_members"),
        target_runtime_s=None if runtime is None else _positive(runtime, f"{where}.target_runtime_s"),
        field=where,
    )


def cluster_rules_parse(raw: Any) -> list[ClusterRule]:
    """The `cluster` section as rules; 400 naming the field on anything else."""
    if raw is None or raw == {} or raw == []:
        return []
    if isinstance(raw, list):
        rules = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict):
                raise WorkflowInvalid(f"cluster[{i}] must be a mapping", field=f"cluster[{i}]")
            rules.append(_rule_parse(entry, f"cluster[{i}]"))
        return rules
    if not isinstance(raw, dict):
        raise WorkflowInvalid("cluster must be a mapping or a list of mappings", field="cluster")
    if "labels" in raw and isinstance(raw["labels"], list):
        return [_rule_parse(raw, "cluster")]
    return [
        ClusterRule(
            labels=(label,),
            max_members=_positive(n, f"cluster.{label}"),
            connected=False,
            field=f"cluster.{label}",
        )
        for label, n in raw.items()
    ]


def cluster_rules(value: Sequence[ClusterRule] | Mapping[str, Any] | None) -> list[ClusterRule]:
    """Rules as given, or parsed from the spec's form."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return cluster_rules_parse(dict(value))
    return list(value)


@dataclass(frozen=True)
class MemberRun:
    """What the payload needs of one member: its name, command, environment, parents in the cluster."""

    name: str
    command: str
    environment: Mapping[str, Any]
    parents: Sequence[str]


def cluster_command(members: Sequence[MemberRun]) -> str:
    """One shell payload that runs the members in the order given (a dependency order).

    Each member runs in its own subshell with its own environment, unless one of its parents in
    the cluster failed or was skipped: then it is skipped. After each member one line
    `ailuro-cluster-member <name> exit=<code>` (or `… skipped`) is printed; the payload exits with
    the first non-zero member code. A parent not in `members` (finished in an earlier attempt)
    counts as succeeded.
    """
    members = _dependency_order(members)
    index = {m.name: i for i, m in enumerate(members)}
    lines = ["rc=0"]
    for i, member in enumerate(members):
        env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (member.environment or {}).items())
        prefix = f"export {env}; " if env else ""
        name = shlex.quote(member.name)
        blockers = [f'"$f{index[p]}" -eq 0' for p in member.parents if p in index]
        run = (
            f"( {prefix}{member.command}\n)\n"
            f"r=$?; printf '%s %s exit=%s\\n' {CLUSTER_MARKER} {name} \"$r\"; "
            f'if [ "$r" -ne 0 ]; then f{i}=1; if [ "$rc" -eq 0 ]; then rc=$r; fi; fi'
        )
        lines.append(f"f{i}=0")
        if blockers:
            lines.append(f"if [ {' ] && [ '.join(blockers)} ]; then")
            lines.append(run)
            lines.append(f"else f{i}=1; printf '%s %s skipped\\n' {CLUSTER_MARKER} {name}; fi")
        else:
            lines.append(run)
    lines.append('exit "$rc"')
    return "\n".join(lines)


# Cluster members or a group's jobs: each has a `name` and `parents`.
_Node = TypeVar("_Node", MemberRun, NewJob)


def _dependency_order(items: Sequence[_Node]) -> list[_Node]:
    """Items (cluster members or the jobs of a group, each with a `name` and `parents`) in
    dependency order, the given order among equals (Kahn's algorithm); parents outside `items`
    are ignored."""
    position = {item.name: i for i, item in enumerate(items)}
    waiting = [sum(1 for p in item.parents if p in position) for item in items]
    children: list[list[int]] = [[] for _ in items]
    for i, item in enumerate(items):
        for p in item.parents:
            if p in position:
                children[position[p]].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    order: list[_Node] = []
    while ready:
        ready.sort(reverse=True)
        i = ready.pop()
        order.append(items[i])
        for c in children[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    return order


def cluster_markers(text: str) -> dict[str, int | None]:
    """Member name → exit code (None: skipped) from a cluster payload's output."""
    results: dict[str, int | None] = {}
    prefix = CLUSTER_MARKER + " "
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        rest = line[len(prefix) :].rstrip()
        if rest.endswith(" skipped"):
            results[rest[: -len(" skipped")]] = None
            continue
        name, sep, code = rest.rpartition(" exit=")
        if sep and code.lstrip("-").isdigit():
            results[name] = int(code)
    return results


def _components(group: Sequence[NewJob]) -> list[list[NewJob]]:
    """The weakly connected subgraphs of the group (edges between its own jobs), in spec order."""
    parent = {job.name: job.name for job in group}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for job in group:
        for p in job.parents:
            if p in parent:
                parent[find(p)] = find(job.name)
    parts: dict[str, list[NewJob]] = {}
    for job in group:
        parts.setdefault(find(job.name), []).append(job)
    return list(parts.values())


def _split(members: Sequence[NewJob], rule: ClusterRule) -> list[list[NewJob]]:
    """Consecutive runs of at most max_members and about target_runtime_s (at least one member)."""
    chunks: list[list[NewJob]] = []
    runtime = 0
    for job in members:
        full = chunks and (
            (rule.max_members is not None and len(chunks[-1]) >= rule.max_members)
            or (rule.target_runtime_s is not None and runtime + job.walltime_s > rule.target_runtime_s)
        )
        if not chunks or full:
            chunks.append([])
            runtime = 0
        chunks[-1].append(job)
        runtime += job.walltime_s
    return chunks


def _key_text(value: Any) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(value))


def _groups(jobs: Sequence[NewJob], rule: ClusterRule, index: int) -> list[tuple[str, list[NewJob]]]:
    """(cluster name, members in dependency order) of one rule."""
    chosen = [job for job in jobs if job.label in rule.labels]
    if not rule.connected:
        label = rule.labels[0]
        ordered = _dependency_order(chosen)
        return [(f"{label}_cluster{k}", chunk) for k, chunk in enumerate(_split(ordered, rule))]
    by_key: dict[tuple[Any, ...], list[NewJob]] = {}
    for job in chosen:
        data = job.data_id or {}
        missing = [k for k in rule.by if k not in data]
        if missing:
            raise WorkflowInvalid(
                f"job {job.name!r} (label {job.label!r}) has no data-id key {missing[0]!r} named in {rule.field}.by",
                field=f"{rule.field}.by",
            )
        key = tuple(data[k] if not isinstance(data[k], list | dict) else repr(data[k]) for k in rule.by)
        by_key.setdefault(key, []).append(job)
    stem = "+".join(rule.labels) + "_cluster" + (str(index) if index else "")
    out: list[tuple[str, list[NewJob]]] = []
    for key, group in by_key.items():
        base = "_".join([stem, *(_key_text(v) for v in key)])
        pieces = [chunk for part in _components(group) for chunk in _split(_dependency_order(part), rule)]
        for k, chunk in enumerate(pieces):
            out.append((base if len(pieces) == 1 else f"{base}_{k}", chunk))
    return out


def cluster_label(rule: ClusterRule) -> str:
    """The label (task) of a rule's cluster jobs."""
    return ("+".join(rule.labels) + "_cluster")[:100]


def dag_clusters(jobs: Sequence[NewJob], rules: Sequence[ClusterRule]) -> list[NewJob]:
    """The nodes to write: every job as given (members marked with their cluster's name), then
    one cluster job per cluster of one member or more.

    1. Every label of a rule has jobs, none is final, none is in two rules.
    2. Members are grouped per rule (`_groups`); a group of one member stays a plain job.
    3. A cluster job needs the largest memory / cores / disk of its members and the sum of their
       walltimes; its parents are its members' parents outside the cluster (member jobs of other
       clusters included: it waits for exactly what its members wait for). It has no children:
       the members keep theirs.
    4. The graph of clusters (members contracted into their cluster) must have no cycle, or the
       clusters would wait for each other: 400 naming the rule.
    """
    if not rules:
        return list(jobs)
    labels_present = {job.label for job in jobs}
    final_labels = {job.label for job in jobs if job.final}
    claimed: dict[str, str] = {}
    for rule in rules:
        for label in rule.labels:
            where = f"{rule.field}.labels" if rule.connected else rule.field
            if label not in labels_present:
                raise WorkflowInvalid(f"cluster names label {label!r}, which has no jobs", field=where)
            if label in final_labels:
                raise WorkflowInvalid(
                    f"cluster names label {label!r}, which has a final job: final jobs are not clustered",
                    field=where,
                )
            if label in claimed:
                raise WorkflowInvalid(f"label {label!r} is clustered twice", field=where)
            claimed[label] = rule.field
    names = {job.name for job in jobs}
    owner: dict[str, str] = {}
    clusters: list[tuple[ClusterRule, str, list[NewJob]]] = []
    for index, rule in enumerate(rules):
        for name, members in _groups(jobs, rule, index):
            if len(members) < 2 and rule.connected:
                continue
            if name in names:  # a job's name, or key values that read alike ("a b", "a-b")
                k = 1
                while f"{name}~{k}" in names:
                    k += 1
                name = f"{name}~{k}"
            names.add(name)
            clusters.append((rule, name, members))
            for m in members:
                owner[m.name] = name
    nodes = [
        NewJob(**{**job.__dict__, "cluster": owner[job.name]}) if job.name in owner else job for job in jobs
    ]
    for rule, name, members in clusters:
        inside = {m.name for m in members}
        parents = list(dict.fromkeys(p for m in members for p in m.parents if p not in inside))
        first = members[0]
        nodes.append(
            NewJob(
                name=name,
                label=cluster_label(rule),
                command=cluster_command(
                    [MemberRun(m.name, m.command, m.environment or {}, m.parents) for m in members]
                ),
                parents=parents,
                memory_mb=max(m.memory_mb for m in members),
                cores=max(m.cores for m in members),
                walltime_s=sum(m.walltime_s for m in members),
                disk_mb=max(m.disk_mb for m in members),
                priority=max((m.priority for m in members if m.priority is not None), default=None),
                container_image=first.container_image,
                data_id={
                    **{k: (first.data_id or {}).get(k) for k in rule.by},
                    "members": [m.name for m in members],
                },
            )
        )
    contracted: dict[str, list[str]] = {}
    for job in jobs:
        mine = owner.get(job.name, job.name)
        parents = contracted.setdefault(mine, [])
        parents.extend(q for p in job.parents if (q := owner.get(p, p)) != mine and q not in parents)
    loop = dag_find_cycle(contracted)
    if loop:
        raise WorkflowInvalid(
            "clustering makes clusters wait for each other: " + " -> ".join(loop), field=rules[0].field
        )
    return nodes
