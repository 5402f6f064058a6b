"""`ailuro campaign …` against a live server: create, dry run, launch, recover, refusals."""

from __future__ import annotations

import json

import pytest

from ailuro.cli import main
from campaigns.advance import campaigns_advance_one_round
from campaigns.models import Campaign, Group, GroupAttempt
from core.services import token_create
from tests.campaigns.conftest import spec_text
from tests.campaigns.pilots import BAD, OK, pilots_run
from tests.factories import QueueFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cli(live_server, monkeypatch, capsys):
    monkeypatch.setenv("AILURO_URL", live_server.url)
    monkeypatch.setenv("AILURO_TOKEN", token_create(username="carol", role="operator"))

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["campaign", *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_an_operator_drives_a_campaign_from_the_command_line(cli, tmp_path):
    spec = tmp_path / "c1.yaml"
    spec.write_text(spec_text())
    code, out, _ = cli("create", str(spec))
    assert code == 0
    campaign_id = json.loads(out)["id"]
    code, out, _ = cli("dry-run", str(campaign_id))
    assert (code, [s["jobs"] for s in json.loads(out)["steps"]]) == (0, [12, 2])
    assert cli("launch", str(campaign_id))[0] == 0
    assert Campaign.objects.get().status == "running"

    queue = QueueFactory(name="CLI_QUEUE")
    campaigns_advance_one_round()
    wfs = list(GroupAttempt.objects.values_list("workflow_id", flat=True))
    pilots_run(queue=queue.name, workflow_ids=wfs, outcome=lambda j: BAD if j.name == "calibrate_6" else OK)
    campaigns_advance_one_round()
    group = Group.objects.get(step__position=0, name="4-6")
    code, out, _ = cli(
        "group", "rescue", str(group.pk), "--error", "exe:65", "--memory-mb", "5000", "--preview"
    )
    assert (code, json.loads(out)["rerun"]) == (0, ["calibrate_6"])
    code, _, err = cli("group", "accept", str(Group.objects.get(step__position=0, name="1-3").pk))
    assert code == 1
    assert "HTTP 409: group is accepted; accept needs one of failed" in err
    assert cli("group", "accept", str(group.pk))[0] == 0
    code, out, _ = cli("log", str(campaign_id))
    verbs = [(a["actor"], a["verb"], a["result"]) for a in json.loads(out)["results"]]
    assert verbs[:3] == [
        ("carol", "accept", "ok"),
        ("carol", "accept", "refused"),
        ("advancer", "fail", "ok"),
    ]


def test_an_unknown_campaign_is_reported_with_the_server_status(cli):
    code, _, err = cli("show", "424242")
    assert code == 1
    assert "HTTP 404" in err


def test_campaign_commands_read_the_token_file_like_every_client_command(
    live_server, monkeypatch, capsys, tmp_path
):
    token_file = tmp_path / "token"
    token_file.write_text(token_create(username="carol", role="operator"))
    token_file.chmod(0o600)
    spec = tmp_path / "c1.yaml"
    spec.write_text(spec_text())
    monkeypatch.delenv("AILURO_TOKEN", raising=False)
    monkeypatch.setenv("AILURO_TOKEN_FILE", str(token_file))

    code = main(["campaign", "--url", live_server.url, "create", str(spec)])

    assert code == 0, capsys.readouterr().err
    assert Campaign.objects.get(pk=json.loads(capsys.readouterr().out)["id"]).owner.username == "carol"
