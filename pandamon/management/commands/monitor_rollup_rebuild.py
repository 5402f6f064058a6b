"""Rebuild the monitor rollups from the job and attempt rows (decision 0003).

For operators: after restoring a backup of only some tables, after a manual repair, or to check the
folds (the summaries after a rebuild equal the folded ones). One transaction: the summaries and the
engine's change feed not folded yet (decision 0006) are truncated and the summaries refilled while
writers of jobs and attempts wait (readers do not); about three minutes for 10 million jobs.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pandamon import rollups


class Command(BaseCommand):
    help = "Truncate the monitor rollups and backfill them from the job and attempt rows (PostgreSQL)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not rollups.enabled():
            raise CommandError("the monitor rollups exist on PostgreSQL only; SQLite pages scan the jobs")
        started = time.monotonic()
        rollups.rollups_rebuild()
        self.stdout.write(f"monitor rollups rebuilt in {time.monotonic() - started:.1f} s")
