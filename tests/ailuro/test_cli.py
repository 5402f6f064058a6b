"""The `ailuro` client commands against a live server started by the test (pytest-django's
live_server: a real HTTP server on loopback over the test database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from ailuro.cli import main
from ailuro.config import ConfigError, config_load
from ailuro.protocol import FINAL_JOB_STATES, FINAL_WORKFLOW_STATES
from core.services import token_create
from dispatcher.models import Job, PayloadLog, Workflow
from dispatcher.states import JOB_FINAL, WORKFLOW_FINAL

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: cli-demo
dimensions: {visit: [1, 2], detector: {range: [0, 2]}}
labels:
  isr: {command: "isr {visit} {detector}", over: [visit, detector]}
  calibrate: {command: "cal {visit} {detector}", over: [visit, detector], after: [isr]}
"""


@pytest.fixture
def server(live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    token_file = tmp_path / "token"
    token_file.write_text(token_create(username="carol") + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("AILURO_URL", live_server.url)
    monkeypatch.setenv("AILURO_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AILURO_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.delenv("AILURO_TOKEN", raising=False)
    return live_server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err + out
    return json.loads(out)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.django_db(transaction=True)
def test_submit_status_report_and_jobs(
    server: Any, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "submit", str(spec_file))
    assert code == 0
    wf = Workflow.objects.get()
    assert out.strip() == f"workflow {wf.pk} (cli-demo) submitted: 8 jobs"
    assert wf.owner.username == "carol"

    status = run_json(capsys, "status", str(wf.pk))
    assert status["counts"] == {"defined": 8}
    assert [t["label"] for t in status["tasks"]] == [
        "isr",
        "calibrate",
    ]
    code, out, _ = run(capsys, "status", str(wf.pk))
    assert "cli-demo" in out
    assert "calibrate" in out

    mine = run_json(capsys, "status")
    assert [w["id"] for w in mine] == [wf.pk]
    with pytest.MonkeyPatch.context() as wide:
        wide.setenv("COLUMNS", "200")  # the whole table on one line, whatever the terminal
        code, out, _ = run(capsys, "status")
    header = next(line for line in out.splitlines() if "finished" in line)
    assert [c.strip() for c in header.strip("┃│ ").replace("┃", "│").split("│")][4:8] == [
        "jobs",
        "finished",
        "failed",
        "pruned",
    ]

    report = run_json(capsys, "report", str(wf.pk))
    assert [(r["label"], r["total"]) for r in report["labels"]] == [("isr", 4), ("calibrate", 4)]
    code, out, _ = run(capsys, "report", str(wf.pk))
    assert "TOTAL" in out
    assert "isr" in out

    jobs = run_json(capsys, "jobs", str(wf.pk), "--label", "calibrate")
    assert sorted(j["name"] for j in jobs) == [
        "calibrate_1_0",
        "calibrate_1_1",
        "calibrate_2_0",
        "calibrate_2_1",
    ]
    code, out, _ = run(capsys, "jobs", str(wf.pk), "--limit", "3")
    assert code == 0
    assert out.count("defined") == 3


@pytest.mark.django_db(transaction=True)
def test_actions_and_watch(server: Any, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf_id = run_json(capsys, "submit", str(spec_file))["id"]

    assert run_json(capsys, "priority", str(wf_id), "+50")["priority"] == 550
    assert run_json(capsys, "set-memory", str(wf_id), "3000", "--label", "isr") == {
        "workflow": wf_id,
        "jobs": 4,
    }
    code, out, _ = run(capsys, "cancel", str(wf_id), "--label", "calibrate")
    assert code == 0
    assert out.strip() == f"workflow {wf_id}: cancelled: cancelled 4"
    assert run_json(capsys, "restart", str(wf_id)) == {"workflow": wf_id, "restarted": 4}
    assert run_json(capsys, "retry", str(wf_id)) == {"workflow": wf_id, "retried": 0, "unpruned": 0}
    assert run_json(capsys, "cancel", str(wf_id)) == {"workflow": wf_id, "cancelled": 8}

    # The workflow is final now, so --watch prints one refresh and stops.
    code, out, _ = run(capsys, "status", str(wf_id), "--watch", "--interval", "0.1", "--json")
    lines = out.strip().splitlines()
    assert code == 0
    assert len(lines) == 1
    assert json.loads(lines[0])["status"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_watch_stops_at_its_timeout(server: Any, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf_id = run_json(capsys, "submit", str(spec_file))["id"]
    code, out, _ = run(
        capsys, "status", str(wf_id), "--watch", "--interval", "0.2", "--timeout", "0.5", "--json"
    )
    assert code == 0
    assert 2 <= len(out.strip().splitlines()) <= 5


@pytest.mark.django_db(transaction=True)
def test_the_clients_final_states_are_the_servers() -> None:
    """`ailuro status --watch` and `ailuro logs --follow` stop on these; the server decides them."""
    assert {str(state) for state in JOB_FINAL} == FINAL_JOB_STATES
    assert {str(state) for state in WORKFLOW_FINAL} == FINAL_WORKFLOW_STATES


def test_logs_and_ping(server: Any, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "submit", str(spec_file))
    job = Job.objects.get(name="isr_1_0")
    PayloadLog.objects.create(job=job, attemptnr=1, sequence=0, text="line one\nline two")
    code, out, _ = run(capsys, "logs", str(job.pk))
    assert code == 0
    assert out == "line one\nline two\n"

    ping = run_json(capsys, "ping")
    assert ping["ok"] is True
    assert ping["user"] == "carol"
    code, out, _ = run(capsys, "ping")
    assert "you are carol" in out


@pytest.mark.django_db(transaction=True)
def test_logs_follow_prints_new_output_through_a_retry_until_the_job_is_final(
    server: Any, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_json(capsys, "submit", str(spec_file))
    job = Job.objects.get(name="isr_1_0")
    Job.objects.filter(pk=job.pk).update(jobstatus="running", attemptnr=1)
    PayloadLog.objects.create(job=job, attemptnr=1, sequence=1, text="first\n")
    seen: list[str] = []

    def payload_and_pilot() -> None:
        """Plays the pilot and the server meanwhile, each step after the follower printed the last."""
        try:

            def printed(text: str) -> None:
                deadline = time.monotonic() + 20
                while text not in "".join(seen):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)

            printed("first\n")
            PayloadLog.objects.create(job=job, attemptnr=1, sequence=2, text="second\n")
            printed("second\n")
            # Attempt 1 fails, its last chunk arrives with the report; the retry starts.
            PayloadLog.objects.create(job=job, attemptnr=1, sequence=3, text="Traceback … KeyError\n")
            Job.objects.filter(pk=job.pk).update(attemptnr=2, jobstatus="running")
            PayloadLog.objects.create(job=job, attemptnr=2, sequence=1, text="retry output\n")
            printed("retry output\n")
            Job.objects.filter(pk=job.pk).update(jobstatus="finished")
        finally:
            connection.close()

    original_write = sys.stdout.write

    def write(text: str) -> int:
        seen.append(text)
        return original_write(text)

    helper = threading.Thread(target=payload_and_pilot)
    sys.stdout.write = write  # type: ignore[method-assign]
    try:
        helper.start()
        code, out, err = run(capsys, "logs", str(job.pk), "--follow", "--interval", "0.1")
    finally:
        sys.stdout.write = original_write  # type: ignore[method-assign]
        helper.join(timeout=30)
    assert code == 0
    assert "".join(seen) == "first\nsecond\nTraceback … KeyError\nretry output\n"
    assert f"[ailuro: job {job.pk} attempt 2]" in err


@pytest.mark.django_db(transaction=True)
def test_errors_are_reported_with_their_field_and_position(
    server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\njobs:\n  - {name: a, label: [b\n")
    code, _, err = run(capsys, "submit", str(bad))
    assert code == 1
    assert "HTTP 400" in err
    assert "line 4" in err

    code, out, _ = run(capsys, "submit", str(bad), "--json")
    assert code == 1
    assert json.loads(out)["error"]["line"] == 4

    code, _, err = run(capsys, "cancel", "999999")
    assert code == 1
    assert "HTTP 404" in err
    code, _, err = run(capsys, "submit", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "cannot read" in err


@pytest.mark.django_db(transaction=True)
def test_bad_token_and_unreachable_server(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AILURO_TOKEN", "ail_not-a-real-token")
    code, _, err = run(capsys, "ping")
    assert code == 1
    assert "HTTP 401" in err
    code, _, err = run(capsys, "ping", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert "cannot reach" in err


@pytest.mark.django_db(transaction=True)
def test_the_installed_entry_point_runs_against_the_server(server: Any, spec_file: Path) -> None:
    env = {**os.environ}
    result = subprocess.run(
        [sys.executable, "-m", "ailuro.cli", "submit", str(spec_file), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Workflow.objects.get(pk=json.loads(result.stdout)["id"]).name == "cli-demo"


# --- configuration -----------------------------------------------------------------------------


def test_config_file_env_and_flags_layer(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    token = tmp_path / "tok"
    token.write_text("ail_from_file\n")
    token.chmod(0o600)
    config.write_text(f'url = "https://file.example.org/"\ntoken_file = "{token}"\ntimeout = 12\n')
    env = {"AILURO_CONFIG": str(config), "HOME": str(tmp_path)}

    loaded = config_load(env=env)
    assert (loaded.url, loaded.token, loaded.timeout) == ("https://file.example.org", "ail_from_file", 12.0)
    assert config_load(env={**env, "AILURO_URL": "http://env:8000"}).url == "http://env:8000"
    assert (
        config_load(env={**env, "AILURO_URL": "http://env:8000"}, url="http://flag:1").url == "http://flag:1"
    )
    assert config_load(env={**env, "AILURO_TOKEN": "ail_env"}).token == "ail_env"


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    defaults = config_load(env={"HOME": str(tmp_path)})
    assert defaults.url == "http://127.0.0.1:8000"
    assert defaults.token is None
    (tmp_path / "c.toml").write_text("url = 'ftp://x'\n")
    with pytest.raises(ConfigError, match="http:// or https://"):
        config_load(env={"AILURO_CONFIG": str(tmp_path / "c.toml")})
    (tmp_path / "c.toml").write_text("urll = 'http://x'\n")
    with pytest.raises(ConfigError, match="unknown key 'urll'"):
        config_load(env={"AILURO_CONFIG": str(tmp_path / "c.toml")})
    with pytest.raises(ConfigError, match="token file"):
        config_load(env={"HOME": str(tmp_path), "AILURO_TOKEN_FILE": str(tmp_path / "nope")})


@pytest.mark.django_db(transaction=True)
def test_big_yaml_is_sent_as_json_and_its_errors_keep_their_position(
    server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    padding = "x" * 400
    spec = {
        "name": "big-yaml",
        "jobs": [
            {
                "name": f"j{i}",
                "label": "x",
                "command": f"echo {i} {padding}",
                "data_id": {"day": "2024-01-02"},
            }
            for i in range(3000)
        ],
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert path.stat().st_size > 1024 * 1024

    wf_id = run_json(capsys, "submit", str(path))["id"]
    assert Job.objects.filter(workflow_id=wf_id).count() == 3000
    assert Job.objects.get(workflow_id=wf_id, name="j7").data_id == {"day": "2024-01-02"}

    path.write_text(yaml.safe_dump(spec) + "broken: [\n")
    code, out, _ = run(capsys, "submit", str(path), "--json")
    assert code == 1
    assert json.loads(out)["error"]["line"] == path.read_text().count("\n") + 1


@pytest.mark.django_db(transaction=True)
def test_upload_with_progress_sends_a_sized_body_and_reports_every_byte(server: Any) -> None:
    from ailuro.http import Client

    body = json.dumps(
        {
            "name": "progress",
            "jobs": [{"name": f"j{i}", "label": "x", "command": "t" * 200} for i in range(2000)],
        }
    ).encode()
    sent: list[int] = []
    answer = Client(config_load()).upload(
        "workflows/", body, content_type="application/json", progress=sent.append
    )
    assert answer["name"] == "progress"
    assert sum(sent) == len(body)
    assert len(sent) > 1
