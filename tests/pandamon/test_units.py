"""One rule for memory figures: a job's peak RSS reads the same on the job page, the task page
(histogram, slowest jobs), the API, `?json` and the `ailuro` CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from django.template.loader import render_to_string

from ailuro import units
from ailuro.cli import main
from core.services import token_create
from dispatcher.models import Job
from pandamon.queries.common import progress
from tests.pandamon.conftest import build_world

KB = 2 * 1024 + 100  # 2.1 MB: far below the task's 1464.8 MB jobs


def test_the_rule_is_mb_with_one_decimal_half_up_and_gb_from_10_gb() -> None:
    assert units.memory_text(None) == "–"
    assert units.memory_text(2 * 1024) == "2.0 MB"
    assert units.memory_text(KB) == "2.1 MB"
    assert units.memory_text(1_500_000) == "1464.8 MB"
    assert units.memory_text(1024 * 1024 + 51) == "1024.0 MB"  # 1024.0498 MB
    assert units.memory_text(12 * 1024 * 1024) == "12.00 GB"
    assert units.memory_text_mb(2000) == "2000.0 MB"
    assert units.mb_from_kb(KB) == 2.1
    assert units.mb_from_kb(1075) == 1.0  # 1.0498 MB
    assert units.mb_from_kb(1280) == 1.3  # 1.25 MB: half up, where round() would give 1.2
    assert units.mb_from_kb(None) is None


@pytest.mark.django_db(transaction=True)
def test_a_jobs_peak_rss_reads_the_same_on_every_surface(
    client: Any, live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    world = build_world()
    job = world.jobs["isr_1"]
    Job.objects.filter(pk=job.pk).update(max_rss_kb=KB)
    shown = units.memory_text(KB)
    assert shown == "2.1 MB"

    page = client.get(f"/job/{job.pandaid}/").content.decode()
    assert f"{shown} RSS" in page
    data = client.get(f"/job/{job.pandaid}/?json").json()
    assert (data["job"]["max_rss_kb"], data["max_rss_mb"]) == (KB, 2.1)

    task = client.get(f"/task/{job.task_id}/").content.decode()
    assert f'<td class="num">{shown}</td>' in task  # the slowest jobs' table
    tdata = client.get(f"/task/{job.task_id}/?json").json()
    (mine,) = [j for j in tdata["slowest_jobs"] if j["pandaid"] == job.pandaid]
    assert mine["max_rss_mb"] == 2.1
    # The histogram's bin holding it has edges that contain 2.1 MB (not a bar labelled 25 MB).
    value = Fraction(KB, 1024)
    holding = [
        b for b in tdata["histograms"]["max_rss_mb"] if Fraction(str(b[0])) <= value < Fraction(str(b[1]))
    ]
    assert len(holding) == 1 and holding[0][2] >= 1

    token_file = tmp_path / "token"
    token_file.write_text(token_create(username="alice") + "\n")
    token_file.chmod(0o600)
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("AILURO_URL", live_server.url)
    monkeypatch.setenv("AILURO_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AILURO_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("AILURO_TOKEN", raising=False)
    capsys.readouterr()
    assert main(["jobs", str(world.workflow.pk), "--json"]) == 0
    api = {j["pandaid"]: j for j in json.loads(capsys.readouterr().out)}
    assert api[job.pandaid]["max_rss_kb"] == KB
    assert main(["jobs", str(world.workflow.pk)]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if f" {job.pandaid} " in row]
    assert shown in line


def test_a_progress_bar_never_draws_a_failed_or_pruned_share_as_done() -> None:
    r = progress({"finished": 299, "failed": 1})
    bar = render_to_string("pandamon/_bar.html", {"r": r})
    assert 'class="bar-finished" style="width: 99.67%"' in bar
    assert 'class="bar-failed" style="width: 0.33%; min-width: 2px"' in bar  # visible, not rounded to 0
    assert 'class="bar-pruned" style="width: 0.00%"' in bar
    assert ">99%</span>" in bar  # not "100%" while a job failed
    done = render_to_string("pandamon/_bar.html", {"r": progress({"finished": 5})})
    assert ">100%</span>" in done and "min-width" not in done
