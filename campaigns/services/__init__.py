"""Writes of the campaign manager: create, edit, launch, pause/resume, and the recovery verbs;
import from here.

Every operator verb is separate, checks its preconditions, can be previewed (`preview=True` checks
and reports what would happen, writing nothing) and leaves an ActionLog row — refusals included.
Jobs are created only through `dispatcher.services.workflow_submit` and re-run through the
dispatcher's `workflow_restart`.
"""

from __future__ import annotations

from campaigns.services.actions import ActionOutcome, ActionRefused
from campaigns.services.campaign_actions import (
    SpecOutdated,
    campaign_create,
    campaign_edit,
    campaign_launch,
    campaign_pause,
    campaign_resume,
    campaign_spec,
    campaign_spec_checked,
    step_pause,
    step_release,
    step_resume,
)
from campaigns.services.group_actions import (
    group_accept,
    group_chain_jobs,
    group_pause,
    group_reject,
    group_rescue,
    group_restart,
    group_resume,
    group_retry,
    group_submit,
    group_unsucceeded,
    rerun_preview,
)
from campaigns.spec import SpecInvalid
from campaigns.splitting import SplitError

__all__ = [
    "ActionOutcome",
    "ActionRefused",
    "SpecInvalid",
    "SpecOutdated",
    "SplitError",
    "campaign_create",
    "campaign_edit",
    "campaign_launch",
    "campaign_pause",
    "campaign_resume",
    "campaign_spec",
    "campaign_spec_checked",
    "group_accept",
    "group_chain_jobs",
    "group_pause",
    "group_reject",
    "group_rescue",
    "group_restart",
    "group_resume",
    "group_retry",
    "group_submit",
    "group_unsucceeded",
    "rerun_preview",
    "step_pause",
    "step_release",
    "step_resume",
]
