"""deploy/systemd: `systemd-analyze verify` (any complaint fails, not only errors) and the offline
`systemd-analyze security` exposure of each service under a threshold."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, planted, run

UNITS = DEPLOY / "systemd"
SERVICES = ["ailuro-web.service", "ailuro-pilot.service", "ailuro-worker.service", "ailuro-beat.service"]
# systemd-analyze's exposure scale is 0.0-10.0 ("OK" below 4.0 on its own labels); --threshold
# takes it times ten. The units score about 1.5.
MAX_EXPOSURE = 20


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze (Debian's systemd package) is needed for the unit checks"
    return path


def verify(analyze: str, tmp_path: Path, *units: Path) -> tuple[int, str]:
    """verify insists that ExecStart binaries exist: the copies point /opt/ailuro at stand-ins."""
    stub_bin = tmp_path / "opt" / "ailuro" / "venv" / "bin"
    stub_bin.mkdir(parents=True, exist_ok=True)
    for name in ("python", "gunicorn", "granian", "celery"):
        (stub_bin / name).write_text("#!/bin/sh\n")
        (stub_bin / name).chmod(0o755)
    copies = []
    # The pilot lane is bound to the web unit: verify loads what it names.
    bound = [UNITS / "ailuro-web.service"] if any(u.name == "ailuro-pilot.service" for u in units) else []
    for unit in (*units, *bound, UNITS / "ailuro.target"):
        copy = tmp_path / "units" / unit.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(unit.read_text().replace("/opt/ailuro/", f"{tmp_path}/opt/ailuro/"))
        copies.append(copy)
    result = run([analyze, "verify", *copies])
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_unit_verifies_without_a_complaint(analyze, tmp_path, service):
    returncode, output = verify(analyze, tmp_path, UNITS / service)
    assert returncode == 0 and output == "", output


@pytest.mark.parametrize("service", SERVICES)
def test_unit_exposure_stays_low(analyze, service):
    result = run(
        [analyze, "security", "--offline=true", f"--threshold={MAX_EXPOSURE}", "--no-pager", UNITS / service]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("NoNewPrivileges=yes", "NoNewPrivilegs=yes", "Unknown key"),
        ("Restart=on-failure", "Restart=sometimes", "Failed to parse"),
        ("[Service]", "[Servce]", "Unknown section"),
    ],
    ids=["typo-key", "bad-value", "typo-section"],
)
def test_verify_complains_about_a_planted_error(analyze, tmp_path, old, new, complaint):
    bad = planted(tmp_path, UNITS / "ailuro-web.service", old, new)
    _, output = verify(analyze, tmp_path / "v", bad)
    assert complaint in output


def test_exposure_check_fails_when_the_hardening_goes(analyze, tmp_path):
    text = (UNITS / "ailuro-web.service").read_text()
    hardening, _, install = text.partition("# Hardening:")[2].partition("[Install]")
    bare = tmp_path / "ailuro-web.service"
    bare.write_text(text.replace(hardening, "\n\n"))
    result = run([analyze, "security", "--offline=true", f"--threshold={MAX_EXPOSURE}", "--no-pager", bare])
    assert result.returncode != 0


def test_every_service_is_part_of_the_target_and_runs_unprivileged():
    for service in SERVICES:
        text = (UNITS / service).read_text()
        assert "PartOf=ailuro.target" in text and "WantedBy=ailuro.target" in text
        assert "User=ailuro" in text and "NoNewPrivileges=yes" in text
        assert "EnvironmentFile=/etc/ailuro/ailuro.env" in text


def test_the_pilot_lane_shares_the_web_metrics_directory_and_restarts_with_it():
    web = (UNITS / "ailuro-web.service").read_text()
    pilot = (UNITS / "ailuro-pilot.service").read_text()
    assert "RuntimeDirectory=ailuro-metrics" in web and "RuntimeDirectory=" not in pilot
    for text in (web, pilot):
        assert "Environment=PROMETHEUS_MULTIPROC_DIR=/run/ailuro-metrics" in text
    assert "ReadWritePaths=/run/ailuro-metrics" in pilot
    assert "BindsTo=ailuro-web.service" in pilot and "After=network-online.target ailuro-web.service" in pilot
    assert "PartOf=ailuro.target ailuro-web.service" in pilot
    assert "Environment=AILURO_WEB_ROLE=pilot" in pilot
