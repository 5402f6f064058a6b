"""campaign_create / campaign_edit / campaign_launch and the dry run."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.dry_run import campaign_dry_run
from campaigns.models import ActionLog, Campaign, CampaignVersion, Group, Step
from campaigns.queries import data_ids_load
from campaigns.services import (
    ActionRefused,
    campaign_create,
    campaign_edit,
    campaign_launch,
    campaign_pause,
)
from campaigns.spec import SpecInvalid, spec_parse
from campaigns.splitting import SplitError
from dispatcher.models import JobAttempt
from tests.campaigns.conftest import spec_text
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def test_create_stores_version_one_and_an_audit_row(operator):
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    assert (campaign.status, campaign.version) == ("draft", 1)
    assert CampaignVersion.objects.get(campaign=campaign).spec["name"] == "c1"
    assert list(ActionLog.objects.values_list("verb", "actor")) == [("create", "operator")]


def test_a_duplicate_name_is_refused_and_nothing_is_written(operator):
    campaign_create(owner=operator, spec_yaml=spec_text())
    with pytest.raises(SpecInvalid, match="exists already"):
        campaign_create(owner=operator, spec_yaml=spec_text())
    assert Campaign.objects.count() == 1


def test_every_edit_is_a_new_version_and_a_running_campaign_must_be_paused(operator):
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    campaign_edit(
        campaign_id=campaign.pk, actor="operator", spec_yaml=spec_text(size=2), comment="smaller groups"
    )
    campaign.refresh_from_db()
    assert campaign.version == 2
    assert list(CampaignVersion.objects.filter(campaign=campaign).values_list("version", "comment")) == [
        (1, ""),
        (2, "smaller groups"),
    ]
    campaign_launch(campaign_id=campaign.pk, actor="operator")
    with pytest.raises(ActionRefused, match="pause it before editing"):
        campaign_edit(campaign_id=campaign.pk, actor="operator", spec_yaml=spec_text())
    campaign_pause(campaign_id=campaign.pk, actor="operator")
    campaign_edit(
        campaign_id=campaign.pk, actor="operator", spec_yaml=spec_text(size=2).replace("2000", "2500")
    )
    campaign.refresh_from_db()
    assert campaign.version == 3


def test_launch_splits_every_step_into_groups(operator):
    campaign = campaign_create(owner=operator, spec_yaml=spec_text(n=7, size=3))
    outcome = campaign_launch(campaign_id=campaign.pk, actor="operator")
    assert outcome.message == "launched: 2 steps, 6 groups"
    assert list(Group.objects.filter(step__position=0).values_list("name", "data_ids")) == [
        ("1-3", [1, 2, 3]),
        ("4-5", [4, 5]),
        ("6-7", [6, 7]),
    ]
    assert list(Step.objects.values_list("name", "status")) == [("step1", "waiting"), ("step2", "waiting")]
    with pytest.raises(ActionRefused, match="only a draft"):
        campaign_launch(campaign_id=campaign.pk, actor="operator")


def test_dry_run_counts_groups_jobs_and_core_hours_from_history(operator):
    spec = spec_parse(spec_text(n=6, size=3))
    before = campaign_dry_run(spec)
    # requested walltimes: isr 600 s, calibrate 3600 s per data id; coadd 3600 s per group
    assert [(s.name, s.groups, s.jobs, s.largest_group_jobs) for s in before.steps] == [
        ("step1", 2, 12, 6),
        ("step2", 2, 2, 1),
    ]
    assert before.core_hours == pytest.approx(6 * (600 + 3600) / 3600 + 2)
    assert before.estimated_from["isr"] == "request"
    job = JobFactory(label="isr", jobstatus="finished")
    now = timezone.now()
    JobAttempt.objects.create(job=job, attemptnr=1, jobstatus="finished", walltime_s=60, endtime=now)
    after = campaign_dry_run(spec)
    assert after.estimated_from["isr"] == "history (1 attempts)"
    assert after.steps[0].core_hours == pytest.approx(6 * (60 + 3600) / 3600)


def test_dry_run_reports_dag_limits_and_launch_refuses(operator, settings):
    settings.AILURO = {**settings.AILURO, "MAX_DAG_JOBS": 5}
    campaign = campaign_create(owner=operator, spec_yaml=spec_text())
    dry = campaign_dry_run(spec_parse(spec_text()))
    assert dry.errors == ["step step1: a group has 6 jobs, above MAX_DAG_JOBS 5"]
    with pytest.raises(ActionRefused, match="dry run failed"):
        campaign_launch(campaign_id=campaign.pk, actor="operator")
    assert not Group.objects.exists()
    assert ActionLog.objects.filter(verb="launch", result="refused").count() == 1


def test_dry_run_warns_about_collisions_with_earlier_live_campaigns(operator):
    first = campaign_create(owner=operator, spec_yaml=spec_text(name="first", n=6))
    campaign_launch(campaign_id=first.pk, actor="operator")
    dry = campaign_dry_run(spec_parse(spec_text(name="second", n=10)))
    assert dry.warnings == [
        f"campaign first (id {first.pk}) already runs label(s) calibrate, coadd, isr over 12 of these data ids"
    ]


def test_data_from_a_file_stays_inside_the_data_folder(settings, tmp_path):
    settings.CAMPAIGNS = {**settings.CAMPAIGNS, "DATA_DIR": tmp_path}
    (tmp_path / "visits.csv").write_text("visit,band\n3,r\n1,g\n")
    assert data_ids_load({"file": {"path": "visits.csv", "column": "visit"}}) == [1, 3]
    with pytest.raises(SplitError, match="inside the campaign data folder"):
        data_ids_load({"file": {"path": "../etc/passwd"}})


def test_data_from_a_configured_catalog_query(settings):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_exposure (visit integer, band text)")
        cursor.execute("INSERT INTO test_exposure VALUES (5, 'r'), (6, 'g'), (7, 'r'), (7, 'r')")
    settings.CAMPAIGNS = {
        **settings.CAMPAIGNS,
        "CATALOGS": {"exposures": {"table": "test_exposure", "column": "visit", "filters": ["band"]}},
    }
    assert data_ids_load({"query": {"catalog": "exposures", "where": {"band": "r"}}}) == [5, 7]
    with pytest.raises(SplitError, match="cannot be filtered on 'visit; drop'"):
        data_ids_load({"query": {"catalog": "exposures", "where": {"visit; drop": 1}}})
    with pytest.raises(SplitError, match="no catalog 'other'"):
        data_ids_load({"query": {"catalog": "other"}})
