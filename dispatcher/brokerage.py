"""Brokerage ranking: which queue a released job goes to. Pure functions over plain data
(docs/contributing.md#shape-of-the-code); `dispatcher.services.placement.broker_one_batch` feeds them
from the database and applies the result.

A queue can take a job when (1) its status accepts new jobs: `online`, or `test` for test labels;
never `brokeroff` or `offline`; (2) the job fits: memory within [min_rss_mb, max_rss_mb], cores ≤
max_cores, walltime ≤ max_walltime_s, disk ≤ max_disk_mb; (3) the queue allows the job's resource
type (a queue without resource types allows all); (4) the job's task allows the queue: its site
constraints (PanDA's includedSite / excludedSite) name queues or sites, with `*` wildcards. Among the queues that can, the least loaded wins:
load = (activated + already assigned in this batch) / (in flight + 1), ties by name. Fair share:
within a batch, users are served round-robin in priority order, so one user's flood does not
starve the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

TEST_LABELS = frozenset({"test", "ptest", "rc_test", "rc_test2"})
# PanDA's brokerage error code for "no queue can run this job" (EC_Release-style).
NO_QUEUE_CODE = 100


@dataclass(frozen=True)
class SiteRule:
    """A task's site constraints, as PanDA's includedSite / excludedSite: patterns matched against
    a queue's name and its site's name (`*` and `?` wildcards, case-sensitive). An empty `include`
    allows every queue; `exclude` wins over `include`."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Iterable[str] | None, exclude: Iterable[str] | None) -> SiteRule:
        """From stored or spec lists (Task.included_sites/excluded_sites, a campaign config)."""
        return cls(include=tuple(include or ()), exclude=tuple(exclude or ()))

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def refusal(self, queue: str, site: str) -> str | None:
        """Why the rule keeps jobs off `queue` (at `site`), or None when it allows it."""
        for pattern in self.exclude:
            if fnmatchcase(queue, pattern) or fnmatchcase(site, pattern):
                return f"{queue} is excluded by the task's sites ({pattern})"
        if self.include and not any(fnmatchcase(queue, p) or fnmatchcase(site, p) for p in self.include):
            return f"{queue} is not among the task's sites ({', '.join(self.include)})"
        return None


ANYWHERE = SiteRule()


@dataclass(frozen=True)
class QueueInfo:
    name: str
    status: str
    min_rss_mb: int
    max_rss_mb: int
    max_cores: int
    max_walltime_s: int
    max_disk_mb: int
    resource_types: frozenset[str] = frozenset()  # empty: any
    activated: int = 0
    in_flight: int = 0
    site: str = ""


@dataclass(frozen=True)
class ResourceTypeInfo:
    name: str
    min_cores: int
    max_cores: int | None
    min_ram_per_core_mb: int
    max_ram_per_core_mb: int | None

    def fits(self, *, cores: int, memory_mb: int) -> bool:
        per_core = memory_mb / max(cores, 1)
        return (
            cores >= self.min_cores
            and (self.max_cores is None or cores <= self.max_cores)
            and per_core >= self.min_ram_per_core_mb
            and (self.max_ram_per_core_mb is None or per_core <= self.max_ram_per_core_mb)
        )


@dataclass(frozen=True)
class JobNeeds:
    pandaid: int
    memory_mb: int
    cores: int
    walltime_s: int
    disk_mb: int
    resource_type: str = ""
    prodsourcelabel: str = "managed"
    user: str = ""
    priority: int = 0
    sites: SiteRule = ANYWHERE


def resource_type_of(job: JobNeeds, types: Sequence[ResourceTypeInfo]) -> str:
    """The job's own resource type, or the first (by name) whose ranges it fits; "" if none."""
    if job.resource_type:
        return job.resource_type
    for rtype in sorted(types, key=lambda t: t.name):
        if rtype.fits(cores=job.cores, memory_mb=job.memory_mb):
            return rtype.name
    return ""


def queue_refuses(queue: QueueInfo, job: JobNeeds, resource_type: str) -> str | None:
    """Why `queue` cannot take `job`, or None when it can."""
    if queue.status == "test":
        if job.prodsourcelabel not in TEST_LABELS:
            return f"{queue.name} is in test mode"
    elif queue.status != "online":
        return f"{queue.name} is {queue.status}"
    if job.sites:
        refusal = job.sites.refusal(queue.name, queue.site)
        if refusal:
            return refusal
    if job.memory_mb > queue.max_rss_mb:
        return f"{queue.name} runs up to {queue.max_rss_mb} MB, job needs {job.memory_mb} MB"
    if job.memory_mb < queue.min_rss_mb:
        return f"{queue.name} takes jobs of at least {queue.min_rss_mb} MB"
    if job.cores > queue.max_cores:
        return f"{queue.name} has {queue.max_cores} cores, job needs {job.cores}"
    if job.walltime_s > queue.max_walltime_s:
        return f"{queue.name} allows {queue.max_walltime_s} s, job needs {job.walltime_s} s"
    if job.disk_mb > queue.max_disk_mb:
        return f"{queue.name} has {queue.max_disk_mb} MB disk, job needs {job.disk_mb} MB"
    if queue.resource_types and resource_type not in queue.resource_types:
        return f"{queue.name} does not take resource type {resource_type or '(none)'}"
    return None


def load(queue: QueueInfo, assigned: int = 0) -> float:
    return (queue.activated + assigned) / (queue.in_flight + 1)


def fair_share_order(jobs: Iterable[JobNeeds]) -> list[JobNeeds]:
    """Round-robin over users; each user's jobs in priority order (highest first, then oldest)."""
    per_user: dict[str, list[JobNeeds]] = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (-j.priority, j.pandaid)):
        per_user[job.user].append(job)
    users = sorted(per_user, key=lambda u: (-per_user[u][0].priority, per_user[u][0].pandaid))
    ordered: list[JobNeeds] = []
    depth = 0
    while len(ordered) < sum(len(v) for v in per_user.values()):
        for user in users:
            if depth < len(per_user[user]):
                ordered.append(per_user[user][depth])
        depth += 1
    return ordered


@dataclass(frozen=True)
class Placement:
    pandaid: int
    queue: str | None  # None: no queue can run it
    resource_type: str
    reason: str  # why not, when queue is None


def broker(
    jobs: Iterable[JobNeeds], queues: Sequence[QueueInfo], types: Sequence[ResourceTypeInfo] = ()
) -> list[Placement]:
    """Place each job on the least loaded queue that can take it, counting this batch's own
    assignments in the load. Deterministic: same input, same placements."""
    assigned: dict[str, int] = defaultdict(int)
    placements: list[Placement] = []
    for job in fair_share_order(jobs):
        rtype = resource_type_of(job, types)
        candidates: list[QueueInfo] = []
        reasons: list[str] = []
        for queue in queues:
            refusal = queue_refuses(queue, job, rtype)
            if refusal is None:
                candidates.append(queue)
            else:
                reasons.append(refusal)
        if not candidates:
            why = "; ".join(reasons[:5]) if reasons else "no queue is defined"
            placements.append(Placement(job.pandaid, None, rtype, f"no queue can run this job: {why}"))
            continue
        best = min(candidates, key=lambda q: (load(q, assigned[q.name]), q.name))
        assigned[best.name] += 1
        placements.append(Placement(job.pandaid, best.name, rtype, ""))
    return placements


def placements_by_queue(placements: Iterable[Placement]) -> Mapping[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for placement in placements:
        if placement.queue is not None:
            grouped[placement.queue].append(placement.pandaid)
    return grouped
