from __future__ import annotations

from django.conf import settings
from django.db import models


class CacheFile(models.Model):
    """A file of the user cache (prun's and `bps submitcmd`'s sandboxes), stored under
    AILURO_PANDACOMPAT["CACHE_DIR"]/<name> and served at /cache/<name>."""

    name = models.CharField(max_length=200, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    size = models.BigIntegerField()
    # What panda-client's validate_cache_file sends as `checksum`: the first of the file's last
    # eight bytes read as a little-endian uint32 (a gzip file's CRC32 footer).
    footer_crc32 = models.BigIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Quota sums (cache_file_store) and reuse lookups (cache_file_find) are per owner.
            models.Index(fields=["owner", "size", "footer_crc32"], name="cachefile_owner_size_sum"),
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowStep(models.Model):
    """The dependency map of one task of a BPS workflow sent in steps (a submission larger than
    the client's `maxRequestLength`): kept until the main workflow names it
    (`IDDS_WORKFLOW_ADDITIONAL_STORAGE/<task>`), then deleted; `pandacompat.steps` caps and
    expires them."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    task_name = models.CharField(max_length=250)
    workflow_name = models.CharField(max_length=250)
    # [[pseudo input name, [[parent task, parent pseudo input name], …]], …]
    jobs = models.JSONField()
    job_count = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "task_name"], name="workflowstep_owner_task"),
        ]
        indexes = [models.Index(fields=["created"], name="workflowstep_created")]

    def __str__(self) -> str:
        return self.task_name
