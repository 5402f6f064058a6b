"""/job/<pandaid>/: history, retry chain, files, resources, relatives, live log tail, kill."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from dispatcher.models import Job, JobStatusLog
from tests.factories import PayloadLogFactory, UserFactory
from tests.pandamon.conftest import World

pytestmark = pytest.mark.django_db


def test_failed_job_page_shows_history_retry_chain_and_reproduce_script(client, world: World) -> None:
    job = world.jobs["isr_4"]
    page = client.get(f"/job/{job.pandaid}/").content.decode()
    assert "pilot:1201 Lost heartbeat from wn3.slac.stanford.edu after 7200 s" in page  # attempt 1
    assert "pilot:1201 Lost heartbeat from wn7.slac.stanford.edu after 3600 s" in page  # attempt 2
    assert page.count('class="badge st-failed"') >= 2
    assert "echo isr" in page  # the reproduce script runs the payload command
    assert f'href="/job/{world.jobs["calib_4"].pandaid}/"' in page  # its child


def test_job_json_has_status_history_and_attempts(client, world: World) -> None:
    data = client.get(f"/job/{world.jobs['isr_4'].pandaid}/?json").json()
    assert [h["to"] for h in data["status_history"]] == ["activated", "sent", "running", "failed"]
    assert [a["attemptnr"] for a in data["attempts"]] == [1, 2]
    assert data["job"]["max_rss_kb"] == 1_500_000
    assert "lease" not in data["job"]
    assert all("lease" not in a for a in data["attempts"])  # an ended attempt's lease fences late reports


def test_log_tail_returns_only_new_chunks_and_keeps_polling_while_running(client, world: World) -> None:
    job = world.jobs["isr_5"]
    PayloadLogFactory(job=job, attemptnr=1, sequence=4, text="step 4 done\n")
    response = client.get(f"/job/{job.pandaid}/log/?after=3")
    body = response.content.decode()
    assert response.status_code == 200
    assert "step 4 done" in body
    assert "step 3" not in body
    assert f'hx-get="/job/{job.pandaid}/log/?after=4"' in body


def test_log_tail_stops_polling_once_the_job_is_final(client, world: World) -> None:
    job = world.jobs["isr_0"]
    response = client.get(f"/job/{job.pandaid}/log/?after=0")
    assert response.status_code == 286  # htmx: stop polling
    assert "hx-trigger" not in response.content.decode()


def test_job_page_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    # job, attempts, history, files, relatives, cluster members, log tail
    with django_assert_num_queries(7):
        assert client.get(f"/job/{world.jobs['isr_4'].pandaid}/").status_code == 200


def test_log_tail_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    with django_assert_num_queries(2):
        assert client.get(f"/job/{world.jobs['isr_5'].pandaid}/log/?after=1").status_code == 200


def test_owner_kills_a_running_job_through_the_workflow_service(client, world: World) -> None:
    job = world.jobs["isr_5"]
    client.force_login(world.user)
    assert f'action="/job/{job.pandaid}/kill/"' in client.get(f"/job/{job.pandaid}/").content.decode()
    response = client.post(f"/job/{job.pandaid}/kill/")
    assert response.status_code == 302
    assert Job.objects.get(pk=job.pk).jobstatus == "cancelled"
    log = JobStatusLog.objects.filter(job=job).latest("time", "id")
    assert (log.previous, log.jobstatus) == ("running", "cancelled")
    assert "alice" in log.cause
    # Only that job: its siblings still run.
    assert Job.objects.get(pk=world.jobs["calib_0"].pk).jobstatus == "running"


def test_other_users_and_anonymous_cannot_kill_but_an_operator_can(client, world: World) -> None:
    job = world.jobs["calib_0"]
    assert client.post(f"/job/{job.pandaid}/kill/").status_code == 401
    client.force_login(UserFactory(username="mallory"))
    assert client.post(f"/job/{job.pandaid}/kill/").status_code == 403
    assert Job.objects.get(pk=job.pk).jobstatus == "running"
    operator = UserFactory(username="olga")
    operator.groups.add(Group.objects.create(name="ailuro-operator"))
    client.force_login(operator)
    assert client.post(f"/job/{job.pandaid}/kill/").status_code == 302
    assert Job.objects.get(pk=job.pk).jobstatus == "cancelled"


def test_killing_a_final_job_is_a_400_and_changes_nothing(client, world: World) -> None:
    job = world.jobs["isr_0"]
    client.force_login(world.user)
    response = client.post(f"/job/{job.pandaid}/kill/")
    assert response.status_code == 400
    assert b"already finished" in response.content
    assert Job.objects.get(pk=job.pk).jobstatus == "finished"


def test_owner_retries_a_failed_job_through_the_workflow_service(client, world: World) -> None:
    job = world.jobs["isr_4"]
    client.force_login(world.user)
    assert f'action="/job/{job.pandaid}/retry/"' in client.get(f"/job/{job.pandaid}/").content.decode()
    response = client.post(f"/job/{job.pandaid}/retry/")
    assert response.status_code == 302
    retried = Job.objects.get(pk=job.pk)
    assert retried.jobstatus in {"defined", "activated"}
    assert JobStatusLog.objects.filter(job=job, previous="failed").exists()


def test_retrying_a_job_that_did_not_fail_is_a_400(client, world: World) -> None:
    client.force_login(world.user)
    response = client.post(f"/job/{world.jobs['isr_0'].pandaid}/retry/")
    assert response.status_code == 400
    assert Job.objects.get(pk=world.jobs["isr_0"].pk).jobstatus == "finished"


def test_a_get_on_an_action_is_refused(client, world: World) -> None:
    assert client.get(f"/job/{world.jobs['isr_5'].pandaid}/kill/").status_code == 405


def test_unknown_job_is_404(client, db) -> None:
    assert client.get("/job/999999/").status_code == 404


def test_buttons_only_for_those_allowed_others_see_how_to_get_them(client, world: World) -> None:
    job = world.jobs["calib_0"]  # running: killable
    anonymous = client.get(f"/job/{job.pandaid}/").content.decode()
    assert f'action="/job/{job.pandaid}/kill/"' not in anonymous
    assert f'href="/login/?next=/job/{job.pandaid}/"' in anonymous
    client.force_login(UserFactory(username="mallory"))
    other = client.get(f"/job/{job.pandaid}/").content.decode()
    assert f'action="/job/{job.pandaid}/kill/"' not in other
    assert "Only its owner and operators may act on this job." in other
    client.force_login(world.user)
    owner = client.get(f"/job/{job.pandaid}/").content.decode()
    assert f'action="/job/{job.pandaid}/kill/"' in owner
    assert "act-hint" not in owner
    # A finished job has nothing to act on: no hint either.
    client.logout()
    assert "act-hint" not in client.get(f"/job/{world.jobs['isr_0'].pandaid}/").content.decode()
