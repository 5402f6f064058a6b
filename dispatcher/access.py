"""One access function per object kind: fetch the object for a user, or say 404 / 403.

The rule (docs/architecture.md#security), decided here and nowhere else:

1. A role that cannot read the user API at all (a pilot token, an anonymous user when anonymous
   read is off) gets 403 for every object, existing or not — the answer says nothing about ids.
2. An object that does not exist is 404.
3. Reading: any reader (every user, operator and admin is one).
4. Writing (`write=True`, the actions): operators and admins on everything; a user on their own
   work only; a reader-only token never.

Views call these and never re-implement the checks. Authentication (API tokens, sessions, OIDC)
only decides who `user` and `token` are.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from core.roles import Role, role_allows, user_roles
from dispatcher.models import ArchivedJob, Job, JobAttempt, Queue, Site, Task, Workflow
from dispatcher.workflows import WorkflowInvalid


def _roles(user: Any, token: Any) -> frozenset[str]:
    roles = user_roles(user, token)
    if not roles and not getattr(user, "is_authenticated", False) and settings.AILURO.get("ANONYMOUS_READ"):
        return frozenset({Role.READER})
    return roles


def can_read(user: Any, token: Any = None) -> bool:
    return role_allows(_roles(user, token), Role.READER)


def read_required(user: Any, token: Any = None) -> None:
    """403 unless the user may read the user API (list endpoints call this)."""
    if not can_read(user, token):
        raise PermissionDenied("this identity may not use the user API (role pilot or none)")


def submit_required(user: Any, token: Any = None) -> None:
    """403 unless the user may submit work of their own."""
    if not role_allows(_roles(user, token), Role.USER):
        raise PermissionDenied("submitting needs the user role; this identity is read-only")


def _may_write(user: Any, token: Any, owner_id: int) -> bool:
    roles = _roles(user, token)
    if role_allows(roles, Role.OPERATOR):
        return True
    return role_allows(roles, Role.USER) and getattr(user, "pk", None) == owner_id


def _decide(user: Any, token: Any, obj: Any, owner_id: int, *, write: bool, kind: str) -> None:
    if write and not _may_write(user, token, owner_id):
        raise PermissionDenied(f"you may not act on this {kind}: it belongs to another user")


def workflow_get_for_user(user: Any, workflow_id: int, *, write: bool = False, token: Any = None) -> Workflow:
    read_required(user, token)
    workflow = Workflow.objects.select_related("owner").filter(pk=workflow_id).first()
    if workflow is None:
        raise Http404(f"no workflow {workflow_id}")
    _decide(user, token, workflow, workflow.owner_id, write=write, kind="workflow")
    return workflow


def task_get_for_user(user: Any, jeditaskid: int, *, write: bool = False, token: Any = None) -> Task:
    read_required(user, token)
    task = Task.objects.select_related("workflow").filter(pk=jeditaskid).first()
    if task is None:
        raise Http404(f"no task {jeditaskid}")
    _decide(user, token, task, task.workflow.owner_id, write=write, kind="task")
    return task


def job_get_for_user(user: Any, pandaid: int, *, write: bool = False, token: Any = None) -> Job | ArchivedJob:
    """The live job, else the archived one (read-only: an action on it is a 409 naming why)."""
    read_required(user, token)
    job: Job | ArchivedJob | None = Job.objects.select_related("workflow").filter(pk=pandaid).first()
    if job is None:
        job = ArchivedJob.objects.select_related("workflow").filter(pk=pandaid).first()
    if job is None:
        raise Http404(f"no job {pandaid}")
    _decide(user, token, job, job.workflow.owner_id, write=write, kind="job")
    if write and isinstance(job, ArchivedJob):
        raise WorkflowInvalid(
            f"job {pandaid} is archived with its workflow {job.workflow_id} and read-only", status_code=409
        )
    return job


def attempt_get_for_user(user: Any, attempt_id: int, *, token: Any = None) -> JobAttempt:
    read_required(user, token)
    attempt = JobAttempt.objects.filter(pk=attempt_id).first()
    if attempt is None:
        raise Http404(f"no attempt {attempt_id}")
    return attempt


def site_get_for_user(user: Any, name: str, *, token: Any = None) -> Site:
    read_required(user, token)
    site = Site.objects.filter(name=name).first()
    if site is None:
        raise Http404(f"no site {name!r}")
    return site


def queue_get_for_user(user: Any, name: str, *, token: Any = None) -> Queue:
    read_required(user, token)
    queue = Queue.objects.select_related("site").filter(name=name).first()
    if queue is None:
        raise Http404(f"no queue {name!r}")
    return queue


def workflows_visible_to(user: Any, *, token: Any = None) -> QuerySet[Workflow]:
    """Every workflow is readable by readers (PanDA's monitor is public within a site)."""
    read_required(user, token)
    return Workflow.objects.all()
