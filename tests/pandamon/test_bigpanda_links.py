"""BigPanDA's link forms land on the ailuro page that shows the same thing, query kept, and
`?json` keeps working through them."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.pandamon.conftest import World

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("/job?pandaid=17", "/job/17/"),
        ("/job/?pandaid=17&json", "/job/17/?json"),
        ("/job?batchid=slurm.4411", "/jobs/?batchid=slurm.4411"),
        ("/job?jobname=isr_1&hours=48", "/jobs/?jobname=isr_1&hours=48"),
        ("/jobrelationships/17/?direction=upstream", "/job/17/"),
        ("/jobstatuslog/17/", "/job/17/"),
        ("/prmonplots/17/", "/job/17/"),
        ("/filebrowser/?pandaid=17", "/job/17/"),
        ("/task?jeditaskid=905", "/task/905/"),
        ("/task/?jeditaskid=905&json", "/task/905/?json"),
        ("/task/?taskname=wf_01_isr_01", "/tasks/?taskname=wf_01_isr_01"),
        ("/taskchain/?jeditaskid=905", "/task/905/"),
        ("/taskprofile/905/", "/task/905/"),
        ("/dash/region/?hours=6", "/dash/?hours=6"),
        ("/dash/production/", "/dash/"),
        ("/dash/analysis/", "/dash/"),
        ("/dash/world/", "/dash/"),
        ("/status_summary/?computingsite=SLAC*", "/sites/?computingsite=SLAC%2A"),
        ("/wns/SLAC_Rubin/", "/jobs/?computingsite=SLAC_Rubin"),
        (
            "/wn/SLAC_Rubin/wn3.slac/?hours=4",
            "/jobs/?computingsite=SLAC_Rubin&modificationhost=wn3.slac&hours=4",
        ),
        ("/idds/", "/workflows/"),
        ("/idds/wfprogress/?idds_request_id=12", "/workflow/12/"),
        ("/idds/daggraph/?idds_request_id=12&json", "/workflow/12/?json"),
        ("/idds/daggraph/?requestid=12", "/workflow/12/"),
        ("/campprog/", "/campaigns/"),
    ],
)
def test_each_bigpanda_link_form_redirects_to_its_page(link: str, target: str) -> None:
    reply = Client().get(link)
    assert reply.status_code == 302, reply.content[:300]
    assert reply["Location"] == target


@pytest.mark.parametrize(
    ("link", "parameter"),
    [
        ("/job?pandaid=abc", "pandaid"),
        ("/job?pandaid=-4", "pandaid"),
        ("/task?jeditaskid=99999999999999999999999", "jeditaskid"),
        ("/idds/daggraph/", "idds_request_id"),
        ("/idds/daggraph/?idds_request_id=x", "idds_request_id"),
        ("/filebrowser/", "pandaid"),
    ],
)
def test_a_bad_id_is_a_400_naming_the_parameter(link: str, parameter: str) -> None:
    reply = Client().get(link + ("&json" if "?" in link else "?json"))
    assert reply.status_code == 400
    assert parameter in reply.json()["error"]


def test_json_scripts_following_the_links_get_the_pages_json(client: Client, world: World) -> None:
    job = world.jobs["isr_4"]
    by_link = client.get(f"/job?pandaid={job.pandaid}&json", follow=True)
    direct = client.get(f"/job/{job.pandaid}/?json")
    assert by_link.redirect_chain == [(f"/job/{job.pandaid}/?json", 302)]
    assert by_link.json() == direct.json()
    task = client.get(f"/task/?jeditaskid={job.task_id}&json", follow=True).json()
    assert task == client.get(f"/task/{job.task_id}/?json").json()
    workflow = client.get(f"/idds/daggraph/?idds_request_id={job.workflow_id}&json", follow=True).json()
    assert workflow == client.get(f"/workflow/{job.workflow_id}/?json").json()
