"""factory_boy factories for the job database. Jobs made here skip the services on purpose only
for setting up states; tests of behaviour go through the services."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from dispatcher.models import Job, Queue, ResourceType, Site, Task, Workflow
from dispatcher.services import task_count_deltas_add


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"SITE{n}")
    region = "US"


class ResourceTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ResourceType
        django_get_or_create = ("name",)

    name = "SCORE"
    min_cores = 1
    max_cores = 1


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"QUEUE_{n}")
    site = factory.SubFactory(SiteFactory)
    max_rss_mb = 8000


class WorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workflow

    name = factory.Sequence(lambda n: f"wf{n}")
    owner = factory.SubFactory(UserFactory)


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    workflow = factory.SubFactory(WorkflowFactory)
    label = factory.Sequence(lambda n: f"label{n}")
    name = factory.LazyAttribute(lambda t: f"{t.workflow.name}/{t.label}")
    username = factory.LazyAttribute(lambda t: t.workflow.owner.username)


class JobFactory(factory.django.DjangoModelFactory):
    """A job in `jobstatus` (default defined), counted in its task's counters like a real one."""

    class Meta:
        model = Job

    task = factory.SubFactory(TaskFactory)
    workflow = factory.LazyAttribute(lambda j: j.task.workflow)
    name = factory.Sequence(lambda n: f"job{n}")
    label = factory.LazyAttribute(lambda j: j.task.label)
    command = "true"
    produsername = factory.LazyAttribute(lambda j: j.task.username)

    @classmethod
    def _create(cls, model_class: type[Job], *args: object, **kwargs: object) -> Job:
        job = super()._create(model_class, *args, **kwargs)
        task_count_deltas_add({(job.task_id, job.jobstatus): 1})
        return job


# --- monitor: attempts, payload log chunks, files and workers for the monitor pages ---


class JobAttemptFactory(factory.django.DjangoModelFactory):
    """A finished attempt; the monitor reads these, the dispatcher's retrier writes them."""

    class Meta:
        model = "dispatcher.JobAttempt"

    job = factory.SubFactory(JobFactory)
    attemptnr = 1
    jobstatus = "failed"
    queue = factory.LazyAttribute(lambda a: a.job.queue_id or "")
    endtime = factory.LazyFunction(timezone.now)


class PayloadLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "dispatcher.PayloadLog"

    job = factory.SubFactory(JobFactory)
    attemptnr = factory.LazyAttribute(lambda c: c.job.attemptnr)
    sequence = factory.Sequence(lambda n: n + 1)
    text = "line\n"


class FileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "dispatcher.File"

    job = factory.SubFactory(JobFactory)
    lfn = factory.Sequence(lambda n: f"file{n}.dat")
    role = "input"


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "harvester.Worker"

    queue = factory.SubFactory(QueueFactory)
    plugin = "local"
    status = "running"
