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
    code, out, _ = cli("create", str(spec), "--json")
    assert code == 0
    campaign_id = json.loads(out)["id"]
    code, out, _ = cli("dry-run", str(campaign_id), "--json")
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
        "--json", "group", "rescue", str(group.pk), "--error", "exe:65", "--memory-mb", "5000", "--preview"
    )
    assert (code, json.loads(out)["rerun"]) == (0, ["calibrate_6"])
    code, _, err = cli("group", "accept", str(Group.objects.get(step__position=0, name="1-3").pk))
    assert code == 1
    assert "HTTP 409: group is accepted; accept needs one of failed" in err
    assert cli("group", "accept", str(group.pk))[0] == 0
    code, out, _ = cli("log", str(campaign_id), "--json")
    verbs = [(a["actor"], a["verb"], a["result"]) for a in json.loads(out)]
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

    code = main(["campaign", "--url", live_server.url, "create", str(spec), "--json"])

    assert code == 0, capsys.readouterr().err
    assert Campaign.objects.get(pk=json.loads(capsys.readouterr().out)["id"]).owner.username == "carol"


def test_every_command_prints_tables_and_takes_json_before_or_after_the_subcommand(cli, tmp_path):
    spec = tmp_path / "c1.yaml"
    spec.write_text(spec_text())
    code, out, _ = cli("create", str(spec))
    assert code == 0
    assert out.startswith("campaign ") and "created: draft, version 1" in out
    campaign_id = str(Campaign.objects.get().pk)
    for argv in (("list",), ("show", campaign_id), ("dry-run", campaign_id), ("log", campaign_id)):
        code, out, _ = cli(*argv)
        assert code == 0 and not out.lstrip().startswith(("{", "[")), (argv, out)
    assert "c1" in cli("list")[1]
    assert "not launched" in cli("show", campaign_id)[1]
    assert "6 data ids" in cli("dry-run", campaign_id)[1]
    assert "create" in cli("log", campaign_id)[1]
    assert "launch (preview): dry run" in cli("launch", campaign_id, "--preview")[1]
    assert "launched: 2 steps" in cli("launch", campaign_id)[1]
    shown = cli("show", campaign_id)[1]
    assert "step1" in shown and "1-3" in shown
    after = json.loads(cli("show", campaign_id, "--json")[1])
    before = json.loads(cli("--json", "show", campaign_id)[1])
    assert after["id"] == before["id"] == int(campaign_id)
    assert [c["name"] for c in json.loads(cli("list", "--status", "running", "--json")[1])] == ["c1"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ("list", "--status", "faild"),
            "status must be one of draft, running, paused, done, failed, rejected, got 'faild'; did you mean 'failed'?",
        ),
        (("group", "rescu", "1"), "did you mean 'rescue'?"),
        (("step", "relase", "1"), "did you mean 'release'?"),
        (("list", "--limit", "0"), "must be a whole number"),
    ],
)
def test_bad_choices_are_usage_errors_naming_the_choices(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["campaign", *argv])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_a_bad_workflow_priority_is_a_usage_error_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["priority", "4", "abc"])
    assert exit_.value.code == 2
    assert "priority must be N, +N or -N" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("split", "field"),
    [
        ("{rule: ranges}", "steps[0].split.ranges"),
        ("{rule: values, values: [{min: 1}]}", "steps[0].split.values"),
        ("{rule: query}", "steps[0].split.max_group_size"),
    ],
)
def test_create_of_a_malformed_rule_names_the_field(cli, tmp_path, split, field):
    spec = tmp_path / "bad.yaml"
    spec.write_text(spec_text().replace("{rule: query, max_group_size: 3}", split, 1))
    code, _, err = cli("create", str(spec))
    assert (code, "HTTP 400" in err, f"(field {field})" in err) == (1, True, True), err
    code, out, _ = cli("create", str(spec), "--json")
    assert (code, json.loads(out)["error"]["field"]) == (1, field)
    assert not Campaign.objects.exists()
