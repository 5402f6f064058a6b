"""/dash/: region → site → queue × state, % failure, running slots, workers, links."""

from __future__ import annotations

import pytest

from tests.pandamon.conftest import World

pytestmark = pytest.mark.django_db


def test_matrix_rolls_queues_up_to_sites_and_regions_exactly(client, world: World) -> None:
    data = client.get("/dash/?json").json()
    regions = {r["name"]: r for r in data["regions"]}
    assert regions["EU"]["counts"] == {"finished": 4, "running": 3}
    assert regions["US"]["counts"] == {"failed": 1}
    assert regions["US"]["failure_pct"] == 100.0
    queues = {q["name"]: q for q in data["queues"]}
    assert queues["CERN_Q"]["running_slots"] == 2
    assert queues["CERN_Q"]["workers"] == {"running": 1}
    assert queues["SLAC_Q"]["workers"] == {"submitted": 1}


def test_every_count_links_to_the_job_list_it_counts(client, world: World) -> None:
    page = client.get("/dash/").content.decode()
    assert "/jobs/?computingsite=CERN_Q&amp;jobstatus=finished&amp;date_from=" in page
    link = page.split("/jobs/?computingsite=CERN_Q&amp;jobstatus=finished&amp;")[1].split('"')[0]
    listed = client.get(f"/jobs/?computingsite=CERN_Q&jobstatus=finished&{link}&json").json()
    assert listed["total"] == 4


def test_dash_query_count_is_pinned(client, world: World, django_assert_num_queries) -> None:
    # Active jobs, the archive's horizon, final jobs in the window, workers, queues, loops.
    with django_assert_num_queries(6):
        assert client.get("/dash/").status_code == 200
