"""deploy/compose.yaml: valid against the compose-spec JSON schema (check-jsonschema's vendored
copy), and wired as the stack needs: migrations first, images pinned, secrets never literal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, planted, run

COMPOSE = DEPLOY / "compose.yaml"
AILURO_SERVICES = {"migrate", "web", "pilot", "worker", "beat"}


def validate(tools: Path, path: Path) -> Any:
    return run([tools / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path])


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]  # PyYAML resolves the << merges


def test_compose_file_is_valid(tools):
    result = validate(tools, COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            '    healthcheck:\n      test: ["CMD", "pg_isready"',
            '    healthchek:\n      test: ["CMD", "pg_isready"',
        ),
        ('    restart: "no"', "    restart: false"),
        ("    stop_grace_period: 200s", "    stop_grace_period: [200]"),
    ],
    ids=["unknown-key", "bad-restart", "bad-type"],
)
def test_compose_validation_fails_on_a_planted_error(tools, tmp_path, old, new):
    result = validate(tools, planted(tmp_path, COMPOSE, old, new))
    assert result.returncode != 0
    assert "validation errors" in result.stdout


def test_the_stack_has_every_part():
    assert set(services()) == {"postgres", "redis", "migrate", "web", "pilot", "worker", "beat", "nginx"}
    assert services()["nginx"]["profiles"] == ["proxy"]


def test_server_processes_start_after_the_migrations_on_one_image():
    svc = services()
    assert svc["migrate"]["restart"] == "no"
    assert svc["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert "migrate" not in svc["migrate"]["depends_on"]
    for name in AILURO_SERVICES - {"migrate"}:
        assert svc[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    images = {svc[name]["image"] for name in AILURO_SERVICES}
    assert len(images) == 1
    for name in AILURO_SERVICES:
        assert svc[name]["build"]["dockerfile"] == "deploy/server.Containerfile"
        assert svc[name]["read_only"] is True
        assert svc[name]["cap_drop"] == ["ALL"]
    assert "replicas" not in svc["beat"].get("deploy", {})
    assert any("/readyz" in part for part in svc["web"]["healthcheck"]["test"])


def test_every_depends_on_names_a_service():
    svc = services()
    for name, service in svc.items():
        assert set(service.get("depends_on", {})) <= set(svc), name
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in svc


# Components of an exact release: PostgreSQL numbers its releases major.minor, the others x.y.z.
EXACT_VERSION_PARTS = {"postgres": 2}


def test_images_are_pinned_to_exact_versions():
    for name, service in services().items():
        if name in AILURO_SERVICES:
            continue
        repository, _, tag = service["image"].partition(":")
        parts = EXACT_VERSION_PARTS.get(repository, 3)
        assert re.fullmatch(
            r"\d+" + r"\.\d+" * (parts - 1) + r"(-[a-z0-9.]+)?(@sha256:[0-9a-f]{64})?", tag
        ), name


def test_secrets_are_never_written_into_the_file():
    env = services()["web"]["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]
    assert services()["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_the_pilot_lane_serves_beside_the_web_and_shares_its_metrics():
    svc = services()
    pilot, web = svc["pilot"], svc["web"]
    assert pilot["network_mode"] == "service:web"  # nginx's upstream 127.0.0.1:8001
    assert pilot["command"][:2] == ["granian", "config.wsgi:application"]
    assert "--port=8001" in pilot["command"] and "--host=127.0.0.1" in pilot["command"]
    assert pilot["environment"]["AILURO_WEB_ROLE"] == "pilot"
    assert "AILURO_WEB_ROLE" not in web["environment"]
    for service in (pilot, web):
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/ailuro-metrics"
        assert "ailuro-metrics:/run/ailuro-metrics" in service["volumes"]
        assert service["environment"]["SECRET_KEY"] == svc["worker"]["environment"]["SECRET_KEY"]
    assert pilot["depends_on"]["web"] == {"condition": "service_healthy"}
