"""Workflow specs and DAG checks: pure functions over plain data (no ORM).

`spec_text.py` turns YAML/JSON text into data, `spec_check.py` checks its sections,
`spec_sizes_check.py` (with the arithmetic of `spec_size.py`) sizes them against the caps before
anything is expanded, `spec.py` expands them into DAG nodes and back; `dag.py` holds the node type and the checks `workflow_submit`
runs before writing (names, dependencies, cycles, caps, queues); `clusters.py` clustering.
"""

from __future__ import annotations

from dispatcher.workflows.clusters import (
    CLUSTER_MARKER,
    ClusterRule,
    MemberRun,
    cluster_command,
    cluster_markers,
    cluster_rules,
    cluster_rules_parse,
    dag_clusters,
)
from dispatcher.workflows.dag import (
    LabelSettings,
    NewJob,
    QueueLimits,
    WorkflowInvalid,
    WorkflowTooLarge,
    dag_check_caps,
    dag_check_queues,
    dag_find_cycle,
    dag_validate,
)
from dispatcher.workflows.spec import ParsedSpec, spec_from_jobs, spec_parse
from dispatcher.workflows.spec_text import spec_load

__all__ = [
    "CLUSTER_MARKER",
    "ClusterRule",
    "MemberRun",
    "cluster_markers",
    "cluster_rules",
    "cluster_rules_parse",
    "dag_clusters",
    "LabelSettings",
    "NewJob",
    "ParsedSpec",
    "QueueLimits",
    "WorkflowInvalid",
    "WorkflowTooLarge",
    "cluster_command",
    "dag_check_caps",
    "dag_check_queues",
    "dag_find_cycle",
    "dag_validate",
    "spec_from_jobs",
    "spec_load",
    "spec_parse",
]
