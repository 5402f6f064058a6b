"""A campaign step with `cluster`: each group's workflow runs isr + calibrate of one data id as one
cluster job, the members keeping their own states."""

from __future__ import annotations

import pytest

from campaigns.advance import campaigns_advance_one_round
from campaigns.models import Group, GroupAttempt, Step
from campaigns.queries import groups_jobs_done_live, progress_summary
from campaigns.services import campaign_create, campaign_launch
from campaigns.spec import SpecInvalid, spec_parse, spec_validate
from dispatcher.models import Job
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import OK, pilots_run

pytestmark = pytest.mark.django_db

CLUSTER = "    cluster: {by: [visit], labels: [isr, calibrate]}\n"


def _clustered_spec(cluster: str = CLUSTER) -> str:
    text = spec_text(n=4, size=2)
    return text.replace("    max_running_groups: 0\n", "    max_running_groups: 0\n" + cluster, 1)


def test_a_step_clusters_isr_and_calibrate_per_data_id(
    operator, queue, django_capture_on_commit_callbacks
) -> None:
    campaign = campaign_create(owner=operator, spec_yaml=_clustered_spec())
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    workflows = list(
        GroupAttempt.objects.filter(group__campaign=campaign).values_list("workflow_id", flat=True)
    )
    jobs = Job.objects.filter(workflow_id__in=workflows)
    # Two groups of two visits: 8 members and 4 cluster jobs.
    assert jobs.count() == 12
    clusters = jobs.filter(label="isr+calibrate_cluster")
    assert clusters.count() == 4
    assert all(set(c.members.values_list("label", flat=True)) == {"isr", "calibrate"} for c in clusters)
    # Only cluster jobs are released; running them finishes their members.
    assert pilots_run(queue=queue.name, workflow_ids=workflows, outcome=lambda job: OK) == 4
    assert set(jobs.values_list("jobstatus", flat=True)) == {"finished"}
    step1 = Step.objects.get(campaign=campaign, position=0)
    with django_capture_on_commit_callbacks(execute=True):
        campaigns_advance_one_round()
    step1.refresh_from_db()
    assert step1.status == "done"
    # Progress counts the members, the planned jobs: a group is 4 of 4 done, not 6 of 4.
    groups = list(Group.objects.filter(step=step1).order_by("pk"))
    assert [(g.jobs_done, g.jobs_total) for g in groups] == [(4, 4), (4, 4)]
    groups_jobs_done_live(groups)
    assert [(g.jobs_done, g.jobs_total) for g in groups] == [(4, 4), (4, 4)]
    summary = progress_summary(groups)
    assert (summary["jobs_done"], summary["jobs_total"], summary["percent"]) == (8, 8, 100)


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ("    cluster: {by: [visit], labels: [isr, coadd]}\n", "'coadd' is not a label of this step"),
        ("    cluster: {labels: [isr], max_members: 0}\n", "cluster.max_members must be a positive integer"),
    ],
)
def test_a_step_cluster_is_checked_at_creation(cluster: str, message: str) -> None:
    with pytest.raises(SpecInvalid, match=message) as caught:
        spec_validate(spec_parse(_clustered_spec(cluster)))
    assert caught.value.field.startswith("steps[0]")
