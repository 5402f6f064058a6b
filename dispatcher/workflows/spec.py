"""Workflow specs: text → data → DAG nodes, and back (docs/user-guide/workflows.md describes the
format; docs/workflow-spec.schema.json is its JSON Schema).

A spec is one mapping with these keys, all optional except that some job must come out of it:

- `name`, `priority`, `description`;
- `defaults`: settings for every job (`resources`, `environment`, `container_image`, `priority`,
  `max_attempts`, `sites`: `{include: [...], exclude: [...]}` queue or site names with `*`
  wildcards, PanDA's includedSite / excludedSite);
- `labels`: per label, settings that are the label's defaults (a job's own values win), and for
  the compact form a `command` template fanned out `over` dimensions (or a `data_ids` list), with
  `after` naming parent labels matched by shared data-id keys;
- `overrides`: per label, settings that win even over a job's own values;
- `dimensions`: named lists or ranges of data-id values the compact labels fan out over;
- `jobs`: the explicit form, one entry per job (`name`, `label`, `command`, `depends_on`,
  `resources`, `environment`, `container_image`, `data_id`, `files`, `priority`, `final`: a final
  job, run once every other job has ended, whatever the outcome);
- `cluster`: `{by: [keys], labels: [labels], max_members: N, target_runtime_s: T}` runs the jobs
  of those labels sharing the keys' values as one job (`clusters.py`), or `{label: N}` N jobs of
  one label.

Three steps, all pure (no ORM) and bounded: `spec_text.spec_load` turns text into data,
`spec_check.spec_sections` checks the sections, and `spec_parse` here expands them into DAG nodes
(counts are checked against the caps before a list is expanded). `spec_from_jobs` is the way back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatcher.brokerage import SiteRule
from dispatcher.workflows.clusters import ClusterRule, cluster_rules
from dispatcher.workflows.dag import LabelSettings, NewJob, WorkflowInvalid, dag_check_caps
from dispatcher.workflows.label_policies import failure_budget_parse, learn_requests_parse
from dispatcher.workflows.spec_check import (
    JOB_KEYS,
    SETTINGS_KEYS,
    CompactLabel,
    SettingsLayer,
    SpecSections,
    expect,
    files_check,
    layers_merge,
    settings_layer,
    spec_sections,
    template_check,
    unknown_keys,
)
from dispatcher.workflows.spec_sizes_check import spec_sizes_check


@dataclass
class ParsedSpec:
    name: str
    priority: int
    jobs: list[NewJob]
    labels: dict[str, LabelSettings] = field(default_factory=dict)
    cluster: list[ClusterRule] = field(default_factory=list)


# --- data → DAG --------------------------------------------------------------------------------


def spec_parse(data: Mapping[str, Any], *, max_jobs: int, max_edges: int) -> ParsedSpec:
    """Turn a loaded spec into DAG nodes (in spec order: explicit jobs, then compact labels).

    1. Check the sections (`spec_sections`).
    2. Size it from the spec alone (`spec_sizes_check`): the jobs every compact label fans out to
       (product of its dimensions' lengths), the edges every `after` makes (per shared key), the
       text every template renders to; over `max_jobs` or `max_edges` is 413 naming the field,
       before anything is expanded.
    3. Expand explicit jobs, then compact labels, resolving settings builtin < defaults < label <
       job < override.
    4. Wire compact `after` dependencies by shared data-id keys, counting edges against
       `max_edges` as they are made.
    5. Each label's task settings; a label of `labels`, `overrides` or `cluster` must have jobs.
    Structural checks of the result (names, cycles) are `dag_validate`'s.
    """
    sections = spec_sections(data)
    spec_sizes_check(sections, max_jobs=max_jobs, max_edges=max_edges)
    caps = _Caps(jobs=sections.job_count(), max_jobs=max_jobs, max_edges=max_edges)
    explicit = _explicit_jobs(sections, caps)
    compact = _compact_jobs(sections)
    _after_wire(sections, explicit, compact, caps)
    jobs = explicit + [job for made in compact.values() for job in made]
    labels = _label_settings(sections, jobs)
    return ParsedSpec(
        name=sections.name, priority=sections.priority, jobs=jobs, labels=labels, cluster=sections.cluster
    )


@dataclass
class _Caps:
    """The job count (known before expansion) and the edges made so far, against their caps. The
    expanding loops count edges in a local and call `refuse` once past the cap (a call per job would
    cost 5 % of a 100,000-job parse)."""

    jobs: int
    max_jobs: int
    max_edges: int
    edges: int = 0

    def refuse(self, edges: int) -> None:
        dag_check_caps(jobs=self.jobs, edges=edges, max_jobs=self.max_jobs, max_edges=self.max_edges)


def _explicit_jobs(sections: SpecSections, caps: _Caps) -> list[NewJob]:
    """The `jobs` list, checked entry by entry. Most entries carry no settings of their own: they
    share their label's resolved settings (computed once per label) instead of merging four layers
    per job, and the type checks run in full only on an entry that fails the fast ones."""
    jobs: list[NewJob] = []
    plain: dict[str, SettingsLayer] = {}
    edges, max_edges = caps.edges, caps.max_edges
    for index, entry in enumerate(sections.jobs):
        if type(entry) is not dict:
            expect(entry, dict, f"jobs[{index}]", "a mapping")
        if not entry.keys() <= JOB_KEYS:
            unknown_keys(entry, JOB_KEYS, f"jobs[{index}]")
        job_name = entry.get("name")
        label = entry.get("label")
        command = entry.get("command")
        depends = entry.get("depends_on") or []
        data_id = entry.get("data_id") or {}
        if type(job_name) is not str or type(label) is not str or type(command) is not str:
            for key, value in (("name", job_name), ("label", label), ("command", command)):
                expect(value, str, f"jobs[{index}].{key}", "a string")
        if type(depends) is not list or not all(type(p) is str for p in depends):
            raise WorkflowInvalid(
                f"jobs[{index}].depends_on must be a list of job names", field=f"jobs[{index}].depends_on"
            )
        if type(data_id) is not dict:
            expect(data_id, dict, f"jobs[{index}].data_id", "a mapping")
        final = entry.get("final", False)
        if type(final) is not bool:
            expect(final, bool, f"jobs[{index}].final", "true or false")
        if final and "depends_on" in entry:
            raise WorkflowInvalid(
                f"jobs[{index}].depends_on: a final job waits for every other job of the workflow and "
                "names no parents",
                field=f"jobs[{index}].depends_on",
            )
        edges += len(depends)
        if edges > max_edges:
            caps.refuse(edges)
        files = files_check(entry["files"], f"jobs[{index}].files") if entry.get("files") else []
        if entry.keys() & SETTINGS_KEYS:
            s = sections.resolve(label, settings_layer(entry, f"jobs[{index}]"))
        else:
            s = plain.get(label) or plain.setdefault(label, sections.resolve(label))
        job = _new_job(job_name, label, command, depends, s, data_id, files)
        if final:
            job.final = True
        jobs.append(job)
    caps.edges = edges
    return jobs


def _compact_jobs(sections: SpecSections) -> dict[str, list[NewJob]]:
    """Each compact label's jobs: its command (and name) template filled in per data id."""
    by_label: dict[str, list[NewJob]] = {}
    for c in sections.compact:
        entry = sections.labels[c.label]
        command_t = entry["command"]
        expect(command_t, str, f"{c.where}.command", "a string")
        allowed = [*c.keys, "label"]
        template_check(command_t, allowed, f"{c.where}.command")
        name_t = entry.get("name")
        if name_t is not None:
            expect(name_t, str, f"{c.where}.name", "a string")
            template_check(name_t, allowed, f"{c.where}.name")
        made: list[NewJob] = []
        try:
            _compact_fill(c, made, command_t, name_t, sections.resolve(c.label))
        except (ValueError, TypeError) as exc:
            raise WorkflowInvalid(
                f"{c.where}: a template does not fit a data id of this label: {exc}",
                field=f"{c.where}.command",
            ) from None
        by_label.setdefault(c.label, []).extend(made)
    return by_label


def _compact_fill(
    c: CompactLabel, made: list[NewJob], command_t: str, name_t: str | None, s: SettingsLayer
) -> None:
    """Append one job per data id of a compact label, its templates filled in."""
    r = s.resources
    memory_mb, cores, walltime_s, disk_mb = r["memory_mb"], r["cores"], r["walltime_s"], r["disk_mb"]
    environment, image, job_priority = s.environment, s.container_image or "", s.priority
    label_name, keys = c.label, c.keys
    for data_id in c.data_ids:
        values = {**data_id, "label": label_name}
        if name_t is not None:
            job_name = name_t.format_map(values)
        else:
            job_name = "_".join([label_name, *[str(data_id[k]) for k in keys]])
        # Jobs of a label share one environment mapping: nothing downstream mutates it.
        made.append(
            NewJob(
                job_name,
                label_name,
                command_t.format_map(values),
                [],
                memory_mb,
                cores,
                walltime_s,
                disk_mb,
                job_priority,
                environment,
                image,
                data_id,
                (),
            )
        )


def _after_wire(
    sections: SpecSections, explicit: list[NewJob], compact: Mapping[str, list[NewJob]], caps: _Caps
) -> None:
    """`after`: each job of a compact label gets as parents the jobs of the named labels whose
    data ids agree on the keys both labels have."""
    explicit_by_label: dict[str, list[NewJob]] = {}
    for job in explicit:
        explicit_by_label.setdefault(job.label, []).append(job)
    keys_of = {c.label: c.keys for c in sections.compact}
    edges, max_edges = caps.edges, caps.max_edges
    for c in sections.compact:
        after = sections.labels[c.label].get("after") or []
        if isinstance(after, str):
            after = [after]
        expect(after, list, f"{c.where}.after", "a list of labels")
        children = compact.get(c.label, [])
        parent_lists: dict[str, list[str]] = {child.name: [] for child in children}
        for parent_label in after:
            expect(parent_label, str, f"{c.where}.after", "a list of labels")
            parents = compact.get(parent_label) or explicit_by_label.get(parent_label)
            if not parents:
                raise WorkflowInvalid(
                    f"label {c.label!r} comes after {parent_label!r}, which has no jobs",
                    field=f"{c.where}.after",
                )
            parent_keys = keys_of.get(parent_label) or sorted({k for p in parents for k in (p.data_id or {})})
            shared = [k for k in c.keys if k in parent_keys]
            by_keys: dict[tuple[Any, ...], list[str]] = {}
            for p in parents:
                pid = p.data_id or {}
                by_keys.setdefault(tuple(pid.get(k) for k in shared), []).append(p.name)
            for child in children:
                cid = child.data_id or {}
                matched = by_keys.get(tuple(cid.get(k) for k in shared))
                if not matched:
                    keys_text = ", ".join(f"{k}={cid.get(k)!r}" for k in shared)
                    raise WorkflowInvalid(
                        f"job {child.name!r} (label {c.label}) matches no job of label {parent_label!r} "
                        f"on {keys_text}",
                        field=f"{c.where}.after",
                    )
                parent_lists[child.name].extend(matched)
                edges += len(matched)
                if edges > max_edges:
                    caps.refuse(edges)
        for child in children:
            child.parents = parent_lists[child.name]
    caps.edges = edges


def _label_settings(sections: SpecSections, jobs: Sequence[NewJob]) -> dict[str, LabelSettings]:
    """Each label's task settings (its jobs' defaults, attempts, retry policy, sites); refuses a
    label named in `labels`, `overrides` or `cluster` that has no jobs."""
    labels: dict[str, LabelSettings] = {}
    for job in jobs:
        if job.label in labels:
            continue
        s = layers_merge(
            sections.defaults,
            sections.label_layers.get(job.label, SettingsLayer()),
            sections.override_layers.get(job.label, SettingsLayer()),
        )
        entry = sections.labels.get(job.label) or {}
        retry_policy = entry.get("retry_policy") or {}
        expect(retry_policy, dict, f"labels.{job.label}.retry_policy", "a mapping")
        labels[job.label] = LabelSettings(
            memory_mb=s.resources["memory_mb"],
            cores=s.resources["cores"],
            walltime_s=s.resources["walltime_s"],
            disk_mb=s.resources["disk_mb"],
            max_attempts=s.max_attempts,
            retry_policy=retry_policy,
            sites=SiteRule.of(s.sites.get("include"), s.sites.get("exclude")),
            failure_budget=failure_budget_parse(
                entry.get("failure_budget"), f"labels.{job.label}.failure_budget"
            ),
            learn_requests=learn_requests_parse(
                entry.get("learn_requests"), f"labels.{job.label}.learn_requests"
            ),
        )
    for rule in sections.cluster:
        for label in rule.labels:
            if label not in labels:
                where = rule.field if not rule.connected else f"{rule.field}.labels"
                raise WorkflowInvalid(f"{where} names label {label!r}, which has no jobs", field=where)
    for label in (*sections.labels, *sections.overrides):
        if label not in labels:
            section = "labels" if label in sections.labels else "overrides"
            raise WorkflowInvalid(
                f"{section}.{label} names a label that has no jobs", field=f"{section}.{label}"
            )
    return labels


def _new_job(
    name: str,
    label: str,
    command: str,
    parents: Sequence[str],
    s: SettingsLayer,
    data_id: Mapping[str, Any],
    files: list[dict[str, Any]],
) -> NewJob:
    r = s.resources
    return NewJob(
        name,
        label,
        command,
        parents,
        r["memory_mb"],
        r["cores"],
        r["walltime_s"],
        r["disk_mb"],
        s.priority,
        s.environment,
        s.container_image or "",
        data_id,
        files,
    )


# --- DAG → data --------------------------------------------------------------------------------


def spec_from_jobs(
    *,
    name: str,
    jobs: Sequence[NewJob],
    priority: int = 500,
    labels: Mapping[str, LabelSettings] | None = None,
    cluster: Sequence[ClusterRule] | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The explicit form of a DAG: every job spelled out, so parsing it gives the same nodes."""
    spec: dict[str, Any] = {"name": name, "priority": priority}
    label_section: dict[str, Any] = {}
    for label, settings in (labels or {}).items():
        entry: dict[str, Any] = {
            "resources": {
                "memory_mb": settings.memory_mb,
                "cores": settings.cores,
                "walltime_s": settings.walltime_s,
                "disk_mb": settings.disk_mb,
            }
        }
        if settings.max_attempts is not None:
            entry["max_attempts"] = settings.max_attempts
        if settings.retry_policy:
            entry["retry_policy"] = dict(settings.retry_policy)
        if settings.failure_budget is not None:
            entry["failure_budget"] = (
                dict(settings.failure_budget) if isinstance(settings.failure_budget, Mapping) else False
            )
        if settings.learn_requests is not None:
            entry["learn_requests"] = dict(settings.learn_requests)
        if settings.sites:
            entry["sites"] = {
                "include": list(settings.sites.include),
                "exclude": list(settings.sites.exclude),
            }
        if entry:
            label_section[label] = entry
    if label_section:
        spec["labels"] = label_section
    rules = cluster_rules(cluster)
    if rules:
        spec["cluster"] = _cluster_spec(rules)
    spec["jobs"] = [
        {
            "name": job.name,
            "label": job.label,
            "command": job.command,
            **({} if job.final else {"depends_on": list(job.parents)}),
            "resources": {
                "memory_mb": job.memory_mb,
                "cores": job.cores,
                "walltime_s": job.walltime_s,
                "disk_mb": job.disk_mb,
            },
            **({"environment": dict(job.environment)} if job.environment else {}),
            **({"container_image": job.container_image} if job.container_image else {}),
            **({"data_id": dict(job.data_id)} if job.data_id else {}),
            **({"files": [dict(f) for f in job.files]} if job.files else {}),
            **({"priority": job.priority} if job.priority is not None else {}),
            **({"final": True} if job.final else {}),
        }
        for job in jobs
    ]
    return spec


def _cluster_spec(rules: Sequence[ClusterRule]) -> Any:
    """The `cluster` section that parses back to `rules`."""
    if all(not r.connected for r in rules):
        return {r.labels[0]: r.max_members for r in rules}
    if len(rules) == 1:
        return rules[0].as_spec()
    return [r.as_spec() for r in rules]
