"""The demo campaign of the embedded run (`ailuro up`): small enough to finish in a couple of
minutes, with one failure an operator can see and recover.

Visit 1003's isr fails on its first attempt with a "bad input" error (a marker file makes the next
attempt succeed), so its group ends `failed`; `restart` (or `retry`) from the campaign page or
`ailuro campaign group restart ID` brings it home, and step 2 starts once every group is accepted.
"""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model

from campaigns.models import Campaign
from campaigns.services import campaign_create, campaign_launch

# The marker lives in $TMPDIR and carries a token drawn for each demo campaign, so every demo (in
# this data directory or a fresh one) fails exactly once and its restart succeeds.
_ISR = (
    'if [ {data_id} = 1003 ] && [ ! -e "${TMPDIR:-/tmp}/ailuro-demo-MARK-{data_id}" ]; then '  # noqa: S108  (a demo marker, not a secret)
    'touch "${TMPDIR:-/tmp}/ailuro-demo-MARK-{data_id}"; '
    'echo "ValueError: bad input for visit {data_id}" >&2; exit 65; fi; '
    "echo isr visit={data_id}; sleep SLEEP"
)

DEMO_SPEC = """
name: {name}
description: The embedded demo - watch it at /campaign/ID/, restart the failed group.
dimension: visit
pipeline:
  isr: {{command: '{isr}', memory_mb: 1000, walltime_s: 60}}
  calibrate: {{command: "echo calibrate visit={{data_id}}; sleep {sleep}", parents: [isr], memory_mb: 1000, walltime_s: 60}}
  coadd: {{command: "echo coadd {{group}}; sleep {sleep}", parents: [calibrate], per: group, memory_mb: 1000, walltime_s: 60}}
data:
  ranges: [[1000, {last}]]
steps:
  - name: step1
    labels: [isr, calibrate]
    split: {{rule: query, max_group_size: 4}}
  - name: step2
    labels: [coadd]
    split: {{rule: none}}
stall_after_s: 300
"""


def demo_spec(name: str, *, visits: int = 8, sleep_s: int = 2) -> str:
    isr = _ISR.replace("SLEEP", str(sleep_s)).replace("MARK", uuid.uuid4().hex[:12]).replace("'", "''")
    return DEMO_SPEC.format(name=name, isr=isr, sleep=sleep_s, last=1000 + visits - 1)


def demo_campaign_submit(*, visits: int = 8, sleep_s: int = 2) -> Campaign:
    """Create and launch the demo campaign (named demo, demo-2, … if earlier ones exist): `visits`
    visits from 1000 (at least 4, so visit 1003 fails once), jobs sleeping `sleep_s` seconds."""
    if visits < 4:
        raise ValueError("the demo needs at least 4 visits (visit 1003 is the one that fails)")
    owner, _ = get_user_model().objects.get_or_create(username="demo")
    name, n = "demo", 1
    while Campaign.objects.filter(name=name).exists():
        n += 1
        name = f"demo-{n}"
    campaign = campaign_create(
        owner=owner, spec_yaml=demo_spec(name, visits=visits, sleep_s=sleep_s), comment="ailuro up demo"
    )
    campaign_launch(campaign_id=campaign.pk, actor="demo")
    campaign.refresh_from_db()
    return campaign
