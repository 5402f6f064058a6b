"""AILURO_LOOP_PERIODS: the loop table's periods replaced from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.loops import _TABLE, PERIODS_ENV, periods_override

ROOT = Path(__file__).resolve().parents[2]


def test_named_periods_replace_the_tables_and_nothing_else_changes() -> None:
    loops = periods_override(_TABLE, " campaigns=2, brokerage = 0.5 ,")
    periods = {loop.name: loop.period_s for loop in loops}
    assert (periods["campaigns"], periods["brokerage"]) == (2.0, 0.5)
    assert [(a.name, a.task, a.time_limit_s) for a in loops] == [
        (b.name, b.task, b.time_limit_s) for b in _TABLE
    ]
    untouched = {b.name: b.period_s for b in _TABLE if b.name not in ("campaigns", "brokerage")}
    assert {k: v for k, v in periods.items() if k in untouched} == untouched
    assert periods_override(_TABLE, "") == _TABLE


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("advancer=2", "'advancer=2' is not <loop>=<seconds>"),
        ("campaigns", "'campaigns' is not <loop>=<seconds>"),
        ("campaigns=fast", "the period of campaigns must be a number of seconds >= 0.5"),
        ("campaigns=0.1", "the period of campaigns must be a number of seconds >= 0.5"),
        ("campaigns=nan", "the period of campaigns must be a number of seconds >= 0.5"),
    ],
)
def test_a_bad_entry_is_refused_by_name(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        periods_override(_TABLE, raw)


def test_beat_and_the_loop_health_read_the_environment() -> None:
    code = (
        "import django; django.setup()\n"
        "from django.conf import settings; from config.celery import app\n"
        "print(app.conf.beat_schedule['campaigns']['schedule'], settings.AILURO_LOOPS['campaigns']['period_s'])"
    )
    env = {**os.environ, PERIODS_ENV: "campaigns=2", "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["2.0", "2.0"], out.stderr
