"""Retry rules: what an error family and code lead to (retry, retry with more memory or walltime,
fail)."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class ErrorFamily(models.TextChoices):
    PILOT = "pilot", "pilot"
    EXE = "exe", "exe"
    TRANS = "trans", "trans exit"
    DISPATCHER = "jobdispatcher", "dispatcher"
    DDM = "ddm", "ddm"
    SUP = "sup", "sup"
    TASKBUFFER = "taskbuffer", "taskbuffer"


class RetryAction(models.TextChoices):
    RETRY = "retry", "retry (transient)"
    INCREASE_MEMORY = "increase_memory", "retry with more memory"
    INCREASE_WALLTIME = "increase_walltime", "retry with more walltime"
    NO_RETRY = "no_retry", "no retry (deterministic)"


class RetryRule(models.Model):
    """One retrier rule, editable in admin: which errors are transient, out-of-memory or final."""

    name = models.CharField(max_length=100, unique=True)
    error_family = models.CharField(max_length=16, choices=ErrorFamily.choices)
    code = models.IntegerField(null=True, blank=True, help_text="Empty: any code of the family.")
    code_max = models.IntegerField(null=True, blank=True, help_text="With code: a range code..code_max.")
    diag_regex = models.CharField(
        max_length=300, blank=True, help_text="Python regex on the error diag; empty: any."
    )
    action = models.CharField(max_length=20, choices=RetryAction.choices)
    params = models.JSONField(default=dict, blank=True, help_text='e.g. {"factor": 2, "backoff_s": 60}')
    scope_label = models.CharField(
        max_length=100, blank=True, help_text="Only for this pipeline label; empty: all."
    )
    order = models.IntegerField(default=100, help_text="Lower runs first; the first matching rule wins.")
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(action__in=RetryAction.values), name="retryrule_action_valid"),
            models.CheckConstraint(
                condition=Q(error_family__in=ErrorFamily.values), name="retryrule_family_valid"
            ),
            models.CheckConstraint(
                condition=Q(code_max__isnull=True) | (Q(code__isnull=False) & Q(code_max__gte=F("code"))),
                name="retryrule_code_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name
