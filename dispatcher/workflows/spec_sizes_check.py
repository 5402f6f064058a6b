"""A checked spec's size against the caps, computed from the spec alone before anything is
expanded: jobs per compact label and in all (`AILURO_MAX_DAG_JOBS`), dependencies per `after` and
in all (`AILURO_MAX_DAG_EDGES`), and the text the templates render to. Over a cap is 413
(`WorkflowTooLarge`) naming the field and the size against the cap; a template whose fields are
too wide is 400 naming it. The arithmetic is `spec_size.py`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dispatcher.workflows.dag import WorkflowTooLarge
from dispatcher.workflows.spec_check import CompactLabel, SpecSections, expect
from dispatcher.workflows.spec_size import (
    LabelShape,
    edge_count,
    longest_value,
    rendered_max,
    template_fields,
    values_len,
)

# All compact labels together may render at most this much command and name text.
MAX_EXPANDED_CHARS = 1024 * 1024 * 1024


def spec_sizes_check(sections: SpecSections, *, max_jobs: int, max_edges: int) -> None:
    """Refuse a spec whose jobs, edges or rendered text are over the caps, before expanding it.

    1. Jobs: each compact label's count (product of its dimensions' lengths), then the total.
    2. Templates: fields bounded in width (400), rendered text per job and in all bounded.
    3. Edges: each `after` counted per shared key (`spec_size.edge_count`), plus the explicit
       `depends_on` lists; each label's and the total against `max_edges`.
    """
    total = len(sections.jobs)
    for c in sections.compact:
        if c.count > max_jobs:
            raise WorkflowTooLarge(
                f"{c.where} fans out to {c.count} jobs ({_fan_out(c)}); the limit is {max_jobs} "
                "(AILURO_MAX_DAG_JOBS)",
                field=c.size_field,
            )
        total += c.count
    if total > max_jobs:
        largest = max(sections.compact, key=lambda c: c.count, default=None)
        field = largest.size_field if largest is not None and largest.count > len(sections.jobs) else "jobs"
        raise WorkflowTooLarge(
            f"the workflow has {total} jobs; the limit is {max_jobs} (AILURO_MAX_DAG_JOBS)", field=field
        )
    _templates_check(sections)
    _edges_check(sections, max_edges)


def _fan_out(c: CompactLabel) -> str:
    if c.axes is None:
        return f"{c.count} data ids"
    return " × ".join(f"{key}: {values_len(values)}" for key, values in c.axes.items())


def _templates_check(sections: SpecSections) -> None:
    expanded = 0
    for c in sections.compact:
        entry = sections.labels[c.label]
        longest = _longest(c)
        allowed = [*c.keys, "label"]
        per_job = 0
        for key in ("command", "name"):
            template = entry.get(key)
            if template is None:
                continue
            where = f"{c.where}.{key}"
            expect(template, str, where, "a string")
            per_job += rendered_max(template_fields(template, allowed, where), longest, where)
        expanded += per_job * c.count
        if expanded > MAX_EXPANDED_CHARS:
            raise WorkflowTooLarge(
                f"{c.where}.command: the compact labels render up to {expanded} characters of commands and "
                f"names; the limit is {MAX_EXPANDED_CHARS}",
                field=f"{c.where}.command",
            )


def _longest(c: CompactLabel) -> dict[str, int]:
    longest = {"label": len(c.label)}
    if c.axes is not None:
        longest.update({key: longest_value(values) for key, values in c.axes.items()})
    else:
        for data_id in c.ids or ():
            for key, value in data_id.items():
                longest[key] = max(longest.get(key, 0), len(str(value)))
    return longest


def _edges_check(sections: SpecSections, max_edges: int) -> None:
    total = sum(
        len(entry["depends_on"])
        for entry in sections.jobs
        if type(entry) is dict and type(entry.get("depends_on")) is list
    )
    shapes = {c.label: c for c in sections.compact if c.count}
    keys_of = {c.label: c.keys for c in sections.compact}
    explicit: dict[str, list[Mapping[str, Any]]] | None = None
    largest: tuple[int, str] = (total, "jobs")
    for c in sections.compact:
        after = sections.labels[c.label].get("after") or []
        if isinstance(after, str):
            after = [after]
        if not isinstance(after, list):
            continue  # wiring names the field
        child = LabelShape(c.keys, axes=c.axes, ids=c.ids)
        made = 0
        for parent_label in after:
            if type(parent_label) is not str:
                continue
            if parent_label in shapes:
                p = shapes[parent_label]
                parent = LabelShape(p.keys, axes=p.axes, ids=p.ids)
                parent_keys: Sequence[str] = p.keys or _id_keys(p.ids or [])
            else:
                if explicit is None:
                    explicit = _explicit_ids(sections.jobs)
                ids = explicit.get(parent_label, [])
                parent = LabelShape([], ids=ids)
                parent_keys = keys_of.get(parent_label) or _id_keys(ids)
            shared = [k for k in c.keys if k in parent_keys]
            n = edge_count(child, parent, shared)
            made += n or 0
        if made > max_edges:
            raise WorkflowTooLarge(
                f"{c.where}.after makes {made} dependencies; the limit is {max_edges} (AILURO_MAX_DAG_EDGES)",
                field=f"{c.where}.after",
            )
        total += made
        largest = max(largest, (made, f"{c.where}.after"))
    if total > max_edges:
        raise WorkflowTooLarge(
            f"the workflow has {total} dependencies; the limit is {max_edges} (AILURO_MAX_DAG_EDGES)",
            field=largest[1],
        )


def _id_keys(ids: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({k for i in ids for k in i})


def _explicit_ids(jobs: Sequence[Any]) -> dict[str, list[Mapping[str, Any]]]:
    """The data ids of the explicit jobs, per label (entries of the wrong shape are left to the
    checks that name them)."""
    by_label: dict[str, list[Mapping[str, Any]]] = {}
    for entry in jobs:
        if type(entry) is not dict or type(entry.get("label")) is not str:
            continue
        data_id = entry.get("data_id") or {}
        if type(data_id) is dict:
            by_label.setdefault(entry["label"], []).append(data_id)
    return by_label
