from __future__ import annotations

from django.apps import AppConfig


class DispatcherConfig(AppConfig):
    name = "dispatcher"
    verbose_name = "Dispatcher: jobs, tasks, workflows, queues"
