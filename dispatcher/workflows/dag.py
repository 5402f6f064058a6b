"""DAG nodes and the pure checks on them: names, dependencies, cycles, size caps, clustering.

Plain data in, plain data out, no ORM: `workflow_submit` runs these before it writes anything, and
the tests drive them with generated graphs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatcher.brokerage import ANYWHERE, SiteRule


class WorkflowInvalid(ValueError):
    """A workflow that cannot be accepted; the message names the offending job, label or field.

    `field` is the path of the offending value in the spec (`jobs[3].depends_on`, `labels.isr`) when
    there is one; `status_code` is the HTTP status the API answers with (413 for size caps).
    """

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        status_code: int = 400,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status_code = status_code
        self.line = line
        self.column = column

    def as_dict(self) -> dict[str, Any]:
        """The JSON error body of the API."""
        body: dict[str, Any] = {"detail": self.message}
        if self.field:
            body["field"] = self.field
        if self.line is not None:
            body["line"] = self.line
            body["column"] = self.column
        return body


class WorkflowTooLarge(WorkflowInvalid):
    """Over a configured size cap (bytes, jobs, edges): answered 413 before anything is built."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message, field=field, status_code=413)


@dataclass
class NewJob:
    """One DAG node as handed to `workflow_submit` (the spec parsers produce these)."""

    name: str
    label: str
    command: str
    parents: Sequence[str] = ()
    memory_mb: int = 2000
    cores: int = 1
    walltime_s: int = 3600
    disk_mb: int = 1000
    priority: int | None = None
    environment: Mapping[str, str] | None = None
    container_image: str = ""
    data_id: Mapping[str, Any] | None = None
    files: Sequence[Mapping[str, Any]] = ()
    # A final job (docs/user-guide/workflows.md#final-jobs): no parents, no children; it runs once
    # every other job of the workflow has ended, whatever the outcome.
    final: bool = False
    # A cluster member (dispatcher/workflows/clusters.py): the name of the cluster job that runs it.
    cluster: str = ""


# At most this many final jobs in one workflow.
MAX_FINAL_JOBS = 10


@dataclass
class LabelSettings:
    """What a label's task carries: the resource defaults of its jobs and its retry budget."""

    memory_mb: int = 2000
    cores: int = 1
    walltime_s: int = 3600
    disk_mb: int = 1000
    max_attempts: int | None = None
    retry_policy: Mapping[str, Any] = field(default_factory=dict)
    sites: SiteRule = ANYWHERE
    # label_policies.failure_budget_parse / learn_requests_parse: None is the site default / off.
    failure_budget: Mapping[str, Any] | bool | None = None
    learn_requests: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class QueueLimits:
    """The static limits of one queue, as the satisfiability check sees them."""

    name: str
    max_rss_mb: int
    max_cores: int
    max_walltime_s: int
    max_disk_mb: int
    site: str = ""


def dag_find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph child → parents as a path [a, b, …, a] read parent → child (b depends
    on a), or None when the graph is acyclic.

    1. Number the nodes and run Kahn's algorithm on integer lists (100,000 nodes in ~0.1 s).
    2. Whatever is left lies on or behind a cycle; walk parent links from one of them until a node
       repeats, and return the loop, reversed so it reads parent → child.
    """
    index: dict[str, int] = {name: i for i, name in enumerate(edges)}
    names = list(edges)
    for parents in edges.values():
        for parent in parents:
            if parent not in index:
                index[parent] = len(names)
                names.append(parent)
    n = len(names)
    indegree = [0] * n
    children: list[list[int]] = [[] for _ in range(n)]
    for child_name, parent_names in edges.items():
        ci = index[child_name]
        indegree[ci] = len(parent_names)
        for parent in parent_names:
            children[index[parent]].append(ci)
    ready = [i for i in range(n) if indegree[i] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen == n:
        return None
    start = names[next(i for i in range(n) if indegree[i] > 0)]
    path: list[str] = []
    position: dict[str, int] = {}
    node_name = start
    while node_name not in position:
        position[node_name] = len(path)
        path.append(node_name)
        node_name = next(p for p in edges[node_name] if indegree[index[p]] > 0)
    loop = path[position[node_name] :] + [node_name]
    return list(reversed(loop))


def dag_check_caps(*, jobs: int, edges: int, max_jobs: int, max_edges: int) -> None:
    if jobs > max_jobs:
        raise WorkflowTooLarge(
            f"the workflow has {jobs} jobs; the limit is {max_jobs} (AILURO_MAX_DAG_JOBS)", field="jobs"
        )
    if edges > max_edges:
        raise WorkflowTooLarge(
            f"the workflow has {edges} dependencies; the limit is {max_edges} (AILURO_MAX_DAG_EDGES)",
            field="jobs",
        )


def _job_problem(index: int, job: NewJob, names: set[str]) -> None:
    """Raise the precise error for a job the first fast loop of `dag_validate` flagged (`names`:
    the names before it)."""
    where = f"jobs[{index}]"
    if not job.name:
        raise WorkflowInvalid(f"job #{index} has an empty name", field=f"{where}.name")
    if len(job.name) > 250:
        raise WorkflowInvalid(f"job name {job.name[:40]!r}… is longer than 250 characters", field=where)
    if job.name in names:
        raise WorkflowInvalid(f"duplicate job name {job.name!r}", field=f"{where}.name")
    if not job.label:
        raise WorkflowInvalid(f"job {job.name!r} has no label", field=f"{where}.label")
    if len(job.label) > 100:
        raise WorkflowInvalid(f"job {job.name!r}: label longer than 100 characters", field=where)
    if not job.command:
        raise WorkflowInvalid(f"job {job.name!r} has no command", field=f"{where}.command")
    for key in ("memory_mb", "cores", "walltime_s", "disk_mb"):
        value = getattr(job, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WorkflowInvalid(
                f"job {job.name!r}: {key} must be a positive integer, got {value!r}",
                field=f"{where}.resources.{key}",
            )


def _parents_problem(index: int, job: NewJob, names: set[str]) -> None:
    """Raise the precise error for a job whose dependencies the second loop flagged."""
    where = f"jobs[{index}]"
    parents = job.parents
    if len(set(parents)) != len(parents):
        raise WorkflowInvalid(f"job {job.name!r} lists a dependency twice", field=f"{where}.depends_on")
    for parent in parents:
        if parent == job.name:
            raise WorkflowInvalid(f"job {job.name!r} depends on itself", field=f"{where}.depends_on")
        if parent not in names:
            raise WorkflowInvalid(
                f"job {job.name!r} depends on unknown job {parent!r}", field=f"{where}.depends_on"
            )


def _resources_ok(shape: tuple[Any, ...]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)


def dag_validate(jobs: Sequence[NewJob], *, max_jobs: int, max_edges: int) -> int:
    """All-or-nothing checks of a DAG in memory; returns the number of edges.

    1. Size caps, before anything else is looked at.
    2. Every job has a non-empty, unique name, a label and a command; resources are positive
       (checked once per distinct request).
    3. Every dependency names a job of the workflow, and no job depends on itself or twice on one.
    4. No cycle (the error names the loop, parent → child).
    A fast loop flags a bad job; `_job_problem` then says exactly what is wrong with it.
    """
    if not jobs:
        raise WorkflowInvalid("a workflow needs at least one job", field="jobs")
    n_edges = sum(len(job.parents) for job in jobs)
    dag_check_caps(jobs=len(jobs), edges=n_edges, max_jobs=max_jobs, max_edges=max_edges)
    names: set[str] = set()
    add = names.add
    shapes: dict[tuple[Any, ...], int] = {}
    for index, job in enumerate(jobs):
        name = job.name
        if (
            not name
            or name in names
            or len(name) > 250
            or not job.label
            or len(job.label) > 100
            or not job.command
        ):
            _job_problem(index, job, names)
        add(name)
        shape = (job.memory_mb, job.cores, job.walltime_s, job.disk_mb)
        if shape not in shapes:
            if not _resources_ok(shape):
                _job_problem(index, job, names)
            shapes[shape] = index
    for index, job in enumerate(jobs):
        parents = job.parents
        if not parents:
            continue
        if (
            job.name in parents
            or not names.issuperset(parents)
            or (len(parents) > 1 and len(set(parents)) != len(parents))
        ):
            _parents_problem(index, job, names)
    if any(job.final for job in jobs):
        _final_jobs_check(jobs)
    cycle = dag_find_cycle({job.name: job.parents for job in jobs})
    if cycle:
        raise WorkflowInvalid("dependency cycle: " + " -> ".join(cycle), field="jobs")
    return n_edges


def _final_jobs_check(jobs: Sequence[NewJob]) -> None:
    """Final jobs: at most MAX_FINAL_JOBS, no parents, no children, and not every job final."""
    finals = [index for index, job in enumerate(jobs) if job.final]
    if len(finals) > MAX_FINAL_JOBS:
        raise WorkflowInvalid(
            f"a workflow may have at most {MAX_FINAL_JOBS} final jobs, this one has {len(finals)}",
            field=f"jobs[{finals[MAX_FINAL_JOBS]}].final",
        )
    if len(finals) == len(jobs):
        raise WorkflowInvalid(
            "every job is final: a final job runs after the other jobs, and there are none",
            field=f"jobs[{finals[0]}].final",
        )
    final_names = {jobs[index].name for index in finals}
    for index in finals:
        if jobs[index].parents:
            raise WorkflowInvalid(
                f"final job {jobs[index].name!r} has depends_on: a final job waits for every other job "
                "of the workflow and names no parents",
                field=f"jobs[{index}].depends_on",
            )
    for index, job in enumerate(jobs):
        named = final_names.intersection(job.parents)
        if named:
            raise WorkflowInvalid(
                f"job {job.name!r} depends on final job {sorted(named)[0]!r}: a final job has no children",
                field=f"jobs[{index}].depends_on",
            )


def dag_check_queues(
    jobs: Iterable[NewJob], queues: Sequence[QueueLimits], sites: Mapping[str, SiteRule] | None = None
) -> None:
    """Refuse jobs that no queue can run; the error names the job and the limit it exceeds, or the
    label whose site constraints (`sites`, per label) allow no queue at all.

    Checked per label and distinct (memory, cores, walltime, disk) request, so 100,000 jobs of five
    labels cost five scans of the queue list. No queue at all means nothing to check against yet (a
    fresh install before `load_queues`): brokerage holds the jobs until queues appear.
    """
    if not queues:
        return
    allowed_by_label: dict[str, list[QueueLimits]] = {}
    checked: set[tuple[str, int, int, int, int]] = set()
    dims = (
        ("memory_mb", "max_rss_mb"),
        ("cores", "max_cores"),
        ("walltime_s", "max_walltime_s"),
        ("disk_mb", "max_disk_mb"),
    )
    for job in jobs:
        request = (job.label, job.memory_mb, job.cores, job.walltime_s, job.disk_mb)
        if request in checked:
            continue
        allowed = allowed_by_label.get(job.label)
        if allowed is None:
            rule = (sites or {}).get(job.label, ANYWHERE)
            allowed = [q for q in queues if rule.refusal(q.name, q.site) is None]
            if not allowed:
                raise WorkflowInvalid(
                    f"label {job.label!r}: its sites (include {list(rule.include) or 'any'}, exclude "
                    f"{list(rule.exclude) or 'none'}) match no queue or site",
                    field=f"labels.{job.label}.sites",
                )
            allowed_by_label[job.label] = allowed
        if any(
            job.memory_mb <= q.max_rss_mb
            and job.cores <= q.max_cores
            and job.walltime_s <= q.max_walltime_s
            and job.disk_mb <= q.max_disk_mb
            for q in allowed
        ):
            checked.add(request)
            continue
        among = "" if len(allowed) == len(queues) else " of its sites"
        for job_key, queue_key in dims:
            best = max(allowed, key=lambda q, k=queue_key: int(getattr(q, k)))  # type: ignore[misc]
            limit = int(getattr(best, queue_key))
            if getattr(job, job_key) > limit:
                raise WorkflowInvalid(
                    f"job {job.name!r} requests {job_key}={getattr(job, job_key)} but no queue{among} allows "
                    f"more than {limit} ({queue_key} of {best.name})",
                    field=f"{job.name}.resources.{job_key}",
                )
        raise WorkflowInvalid(
            f"job {job.name!r} requests memory_mb={job.memory_mb}, cores={job.cores}, "
            f"walltime_s={job.walltime_s}, disk_mb={job.disk_mb} and no single queue{among} offers all of them",
            field=f"{job.name}.resources",
        )
