"""Where jobs run: sites, resource types and the PanDA queues pilots pull from."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class Site(models.Model):
    name = models.CharField(max_length=64, unique=True)
    region = models.CharField(
        max_length=64, blank=True, help_text="Cloud / region, for the dashboard matrix."
    )
    tier = models.PositiveSmallIntegerField(default=2)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["region", "name"]

    def __str__(self) -> str:
        return self.name


class ResourceType(models.Model):
    """PanDA's resource types (SCORE, MCORE, SCORE_HIMEM …): ranges of cores and RAM per core."""

    name = models.CharField(max_length=32, unique=True)
    min_cores = models.PositiveIntegerField(default=1)
    max_cores = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no upper bound.")
    min_ram_per_core_mb = models.PositiveIntegerField(default=0)
    max_ram_per_core_mb = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: no upper bound."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_cores__isnull=True) | Q(max_cores__gte=F("min_cores")),
                name="resourcetype_cores_range",
            ),
            models.CheckConstraint(
                condition=Q(max_ram_per_core_mb__isnull=True)
                | Q(max_ram_per_core_mb__gte=F("min_ram_per_core_mb")),
                name="resourcetype_ram_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def fits(self, *, cores: int, memory_mb: int) -> bool:
        per_core = memory_mb / max(cores, 1)
        return (
            cores >= self.min_cores
            and (self.max_cores is None or cores <= self.max_cores)
            and per_core >= self.min_ram_per_core_mb
            and (self.max_ram_per_core_mb is None or per_core <= self.max_ram_per_core_mb)
        )


class QueueStatus(models.TextChoices):
    ONLINE = "online", "online"
    OFFLINE = "offline", "offline"
    BROKEROFF = "brokeroff", "brokeroff (no new jobs brokered, pilots still served)"
    TEST = "test", "test (only test jobs)"


class PilotFlavour(models.TextChoices):
    AILURO = "ailuro", "ailuro pilot"
    PANDA = "panda", "PanDA pilot3"


class Queue(models.Model):
    """A PanDA queue: where pilots ask for work, with the limits brokerage and dispatch match on."""

    name = models.CharField(max_length=64, unique=True)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="queues")
    status = models.CharField(max_length=16, choices=QueueStatus.choices, default=QueueStatus.ONLINE)
    min_rss_mb = models.PositiveIntegerField(default=0)
    max_rss_mb = models.PositiveIntegerField(
        default=4000, help_text="Largest job memory (MB) this queue runs."
    )
    max_walltime_s = models.PositiveIntegerField(default=86400)
    max_cores = models.PositiveIntegerField(default=1)
    max_disk_mb = models.PositiveIntegerField(default=20000)
    resource_types = models.ManyToManyField(ResourceType, blank=True, related_name="queues")
    plugin = models.CharField(
        max_length=32, default="local", help_text="Harvester plugin: local, slurm, kubernetes."
    )
    plugin_params = models.JSONField(
        default=dict, blank=True, help_text="Plugin settings, e.g. Slurm partition and account."
    )
    pilot_flavour = models.CharField(max_length=16, choices=PilotFlavour.choices, default=PilotFlavour.AILURO)
    max_workers = models.PositiveIntegerField(default=10, help_text="Most pilots alive at once.")
    max_queued_workers = models.PositiveIntegerField(
        default=5, help_text="Most pilots waiting in the batch system."
    )
    heartbeat_timeout_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds without heartbeat before a job is lost (default: AILURO_HEARTBEAT_TIMEOUT).",
    )
    require_lease = models.BooleanField(
        default=True,
        help_text=(
            "Pilot updates must echo the lease of their dispatch; off only for queues served by the "
            "real PanDA pilot, which does not echo it (then the attempt number alone fences)."
        ),
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=QueueStatus.values), name="queue_status_valid"),
            models.CheckConstraint(condition=Q(max_rss_mb__gte=F("min_rss_mb")), name="queue_rss_range"),
            models.CheckConstraint(condition=Q(max_cores__gte=1), name="queue_max_cores_positive"),
        ]

    def __str__(self) -> str:
        return self.name
