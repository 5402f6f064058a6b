"""embedded.demo.campaign: the embedded run's campaign launches, and its injected failure recovers."""

from __future__ import annotations

import subprocess

import pytest

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import Group
from dispatcher.models import Job
from embedded.demo.campaign import demo_campaign_submit

pytestmark = pytest.mark.django_db


def test_the_demo_campaign_is_launched_and_its_first_step_submitted():
    first = demo_campaign_submit()
    second = demo_campaign_submit()
    assert (first.name, first.status, second.name) == ("demo", "running", "demo-2")
    campaigns_advance_one_round()
    groups = Group.objects.filter(campaign=first, step__name="step1").order_by("position")
    assert [(g.name, g.status, g.jobs_total) for g in groups] == [
        ("1000-1003", "running", 8),
        ("1004-1007", "running", 8),
    ]


def test_the_demo_isr_of_visit_1003_fails_once_then_succeeds(tmp_path):
    campaign = demo_campaign_submit(sleep_s=0)
    campaigns_advance_one_round()
    command = Job.objects.get(workflow__campaign_attempt__group__campaign=campaign, name="isr_1003").command
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True)
    again = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True)
    assert (first.returncode, first.stderr.strip()) == (65, "ValueError: bad input for visit 1003")
    assert (again.returncode, again.stdout.strip()) == (0, "isr visit=1003")
    other = Job.objects.get(workflow__campaign_attempt__group__campaign=campaign, name="isr_1002").command
    assert subprocess.run(["bash", "-c", other], env=env).returncode == 0
