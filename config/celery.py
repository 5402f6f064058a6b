"""The Celery app and the beat schedule of DESIGN §6, as code.

Delivery is at least once (`acks_late`; a redelivered or duplicated tick is harmless because every
loop takes a database lease and claims work with compare-and-set updates), one task at a time per
worker process (`prefetch_multiplier=1`: a slow tick does not hold others hostage), and every task
has soft and hard time limits (settings: CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT, and
per task in `dispatcher/tasks.py`). Production uses Redis or RabbitMQ (CELERY_BROKER_URL); the
embedded run does not use Celery at all: `manage.py run_loops` calls the same loop steps.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Each entry's `expires` equals its period: a tick that waited in the queue longer than that (workers
# down, backlog) is dropped instead of running late, since the next one is already on its way.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Released jobs wait for brokerage before a pilot can get them: seconds matter for short DAG
    # levels, and one bounded step is cheap when there is nothing to do (one indexed query).
    "brokerage": {"task": "dispatcher.loop_brokerage", "schedule": 5.0, "options": {"expires": 5.0}},
    # Timeouts are 30 min (sent), 2 h (heartbeat) and 3 h (holding): a minute of lateness is noise,
    # and the watcher scans an index of in-flight jobs.
    "watcher": {"task": "dispatcher.loop_watcher", "schedule": 60.0, "options": {"expires": 60.0}},
    # Task and workflow states feed the monitor and the campaign advancer; 10 s keeps pages fresh
    # while folding deltas in batches (counts are exact at any time without the fold).
    "rollup": {"task": "dispatcher.loop_rollup", "schedule": 10.0, "options": {"expires": 10.0}},
    # The monitor's per-hour rollups (decision 0003): pages are exact without the fold (they read
    # the unfolded deltas too), so 10 s only bounds how many deltas a page has to add up.
    "monitor": {"task": "pandamon.loop_monitor", "schedule": 10.0, "options": {"expires": 10.0}},
    # Pilots take minutes to start on a batch system; submitting, polling and cleaning workers every
    # 30 s keeps queues filled without hammering sbatch/sacct (harvester/tasks.py).
    "provisioner": {"task": "harvester.provision", "schedule": 30.0, "options": {"expires": 30.0}},
    # Campaign groups take minutes to hours; judging them, submitting the next ones and flagging
    # stalls every 30 s is prompt enough, and each round is bounded (AILURO_CAMPAIGN_SUBMIT_PER_ROUND).
    "campaigns": {"task": "campaigns.advance", "schedule": 30.0, "options": {"expires": 30.0}},
    # Archiving and trimming are about disk space, measured in days.
    "janitor": {"task": "dispatcher.loop_janitor", "schedule": 3600.0, "options": {"expires": 3600.0}},
}

app = Celery("ailuro")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = BEAT_SCHEDULE
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
# A worker process killed mid-tick (OOM, SIGKILL) gets its message acked rather than redelivered in a
# loop; the next beat tick redoes the step anyway.
app.conf.task_reject_on_worker_lost = False
app.autodiscover_tasks()


def loop_periods() -> dict[str, float]:
    """Entry name → period in seconds, for `manage.py run_loops` (same schedule without Celery; it
    runs the dispatcher's loops, the embedded run's provisioner is `run_local_pilots`)."""
    return {name: float(entry["schedule"]) for name, entry in BEAT_SCHEDULE.items()}
