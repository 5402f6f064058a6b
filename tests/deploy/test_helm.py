"""deploy/helm/ailuro: `helm lint --strict`, `helm template` with the default values and with every
option on, the rendered manifests validated against the Kubernetes JSON schemas (strict: unknown
fields fail) of the oldest and newest Kubernetes the validator ships, and what the chart promises
(probes, hook, one beat, secrets by reference, scrape annotations)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from tests.deploy.conftest import DEPLOY, planted, run

CHART = DEPLOY / "helm" / "ailuro"
KUBERNETES_VERSIONS = ["1.32.0", "1.37.0"]
FULL_VALUES = [
    "--set=oidc.enabled=true",
    "--set=oidc.issuer=https://iam.example.org",
    "--set=oidc.clientId=ailuro-web",
    "--set=oidc.audience={https://ailuro.example.org}",
    "--set=oidc.roleGroups.atlas/production=operator",
    "--set=secrets.oidcClientSecret.name=ailuro-oidc",
    "--set=ingress.enabled=true",
    "--set=ingress.className=nginx",
    "--set=ingress.tlsSecretName=ailuro-tls",
    "--set=image.digest=sha256:" + "0" * 64,
    "--set=imagePullSecrets[0].name=regcred",
    "--set=config.extra.AILURO_HEARTBEAT_TIMEOUT=3600",
    "--set=web.nodeSelector.disk=ssd",
]


def render(tools: Path, chart: Path = CHART, *values: str) -> Any:
    return run([tools / "helm", "template", "ailuro", chart, "--namespace", "wms", *values])


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(tools: Path, manifests: str, tmp_path: Path, version: str) -> Any:
    path = tmp_path / f"rendered-{version}.yaml"
    path.write_text(manifests)
    return run([tools / "kubernetes-validate", "--strict", "-k", version, path])


@pytest.fixture(scope="module")
def rendered(tools: Path) -> dict[str, str]:
    out = {}
    for name, values in {"default": [], "full": FULL_VALUES}.items():
        result = render(tools, CHART, *values)
        assert result.returncode == 0, result.stderr
        out[name] = result.stdout
    return out


def by_kind(manifests: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents(manifests)}


def test_chart_passes_helm_lint(tools):
    for values in ([], FULL_VALUES):
        result = run([tools / "helm", "lint", "--strict", CHART, *values])
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", ["default", "full"])
def test_rendered_manifests_validate_against_the_kubernetes_schemas(
    tools, rendered, tmp_path, values, version
):
    result = validate(tools, rendered[values], tmp_path, version)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("INFO") and " passed " in line]
    # Every document was checked against a schema (an unknown kind is only a warning).
    assert len(passed) == len(documents(rendered[values])), result.stdout
    assert "WARN" not in result.stdout


def test_validation_fails_on_a_planted_manifest_error(tools, tmp_path):
    chart = tmp_path / "ailuro"
    shutil.copytree(CHART, chart)
    planted(
        chart / "templates",
        CHART / "templates" / "migrations-job.yaml",
        "restartPolicy: Never",
        "restartPolcy: Never",
    )
    result = render(tools, chart)
    assert result.returncode == 0, result.stderr  # helm renders it: only the schemas know the field
    result = validate(tools, result.stdout, tmp_path, KUBERNETES_VERSIONS[0])
    assert result.returncode != 0
    assert "'restartPolcy' was unexpected" in result.stdout


def test_validation_fails_on_a_wrong_type(tools, rendered, tmp_path):
    broken = rendered["default"].replace("containerPort: 8000", "containerPort: web-port", 1)
    assert broken != rendered["default"]
    result = validate(tools, broken, tmp_path, KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0


def test_rendering_fails_on_a_planted_template_error(tools, tmp_path):
    chart = tmp_path / "ailuro"
    shutil.copytree(CHART, chart)
    planted(chart / "templates", CHART / "templates" / "configmap.yaml", "{{- include", "{{- inclde")
    result = render(tools, chart)
    assert result.returncode != 0
    assert "inclde" in result.stderr


def test_rendering_fails_without_a_secret_name(tools):
    result = render(tools, CHART, "--set=secrets.existingSecret=")
    assert result.returncode != 0
    assert "a Secret name for" in result.stderr


def test_web_probes_health_and_readiness_with_an_allowed_host(rendered):
    web = by_kind(rendered["default"])[("Deployment", "ailuro-web")]
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz?part=database&part=broker"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "ailuro.example.org"}]
    annotations = web["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
    assert "checksum/config" in annotations


def test_beat_is_one_replica_and_never_two(rendered):
    beat = by_kind(rendered["default"])[("Deployment", "ailuro-beat")]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(rendered):
    job = by_kind(rendered["default"])[("Job", "ailuro-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    # No ConfigMap reference: it does not exist yet when a first install runs its hooks.
    assert "envFrom" not in container
    env = {item["name"] for item in container["env"]}
    assert {"DATABASE_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= env


def test_secrets_are_referenced_never_rendered(rendered):
    docs = documents(rendered["full"])
    assert "Secret" not in {doc["kind"] for doc in docs}
    secret_refs = {}
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for item in container.get("env", []):
                if item["name"] in {
                    "SECRET_KEY",
                    "DATABASE_URL",
                    "CELERY_BROKER_URL",
                    "OIDC_RP_CLIENT_SECRET",
                }:
                    assert "value" not in item, item
                    secret_refs[item["name"]] = item["valueFrom"]["secretKeyRef"]["name"]
    assert secret_refs == {
        "SECRET_KEY": "ailuro",
        "DATABASE_URL": "ailuro",
        "CELERY_BROKER_URL": "ailuro",
        "OIDC_RP_CLIENT_SECRET": "ailuro-oidc",
    }
    config = by_kind(rendered["full"])[("ConfigMap", "ailuro")]["data"]
    assert config["OIDC_ISSUER"] == "https://iam.example.org"
    assert config["OIDC_ROLE_GROUPS"] == "atlas/production=operator"
    assert not {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "OIDC_RP_CLIENT_SECRET"} & set(config)


def test_pods_run_unprivileged_on_a_read_only_root(rendered):
    for doc in documents(rendered["default"]):
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["image"] == "ailuro-server:0.1.0"


def test_the_pilot_lane_runs_in_each_web_pod_and_the_ingress_routes_exactly_its_paths(rendered):
    kinds = by_kind(rendered["full"])
    pod = kinds[("Deployment", "ailuro-web")]["spec"]["template"]["spec"]
    web, pilot = pod["containers"]
    assert pilot["command"][:2] == ["granian", "config.wsgi:application"]
    assert "--port=8001" in pilot["command"]
    assert {"name": "AILURO_WEB_ROLE", "value": "pilot"} in pilot["env"]
    assert all(item["name"] != "AILURO_WEB_ROLE" for item in web.get("env", []))
    # One /tmp (and so one /tmp/prometheus) for both servers: the web container's /metrics sums them.
    assert pilot["volumeMounts"] == web["volumeMounts"]
    assert pilot["readinessProbe"]["httpGet"] == {
        "path": "/readyz?part=database",
        "port": "pilot",
        "httpHeaders": [{"name": "Host", "value": "ailuro.example.org"}],
    }
    ports = {port["name"]: port for port in kinds[("Service", "ailuro-web")]["spec"]["ports"]}
    assert ports["pilot"]["targetPort"] == "pilot"
    paths = kinds[("Ingress", "ailuro")]["spec"]["rules"][0]["http"]["paths"]
    lane = [item["path"] for item in paths if item["backend"]["service"]["port"]["name"] == "pilot"]
    assert lane == settings.AILURO_PILOT_LANE
    assert all(item["pathType"] == "Exact" for item in paths if item["path"] in lane)
    assert paths[-1]["path"] == "/" and paths[-1]["backend"]["service"]["port"]["name"] == "http"


def test_the_pilot_lane_can_be_left_out(tools):
    result = render(tools, CHART, *FULL_VALUES, "--set=pilotLane.enabled=false")
    assert result.returncode == 0, result.stderr
    kinds = by_kind(result.stdout)
    assert len(kinds[("Deployment", "ailuro-web")]["spec"]["template"]["spec"]["containers"]) == 1
    paths = kinds[("Ingress", "ailuro")]["spec"]["rules"][0]["http"]["paths"]
    assert [item["path"] for item in paths] == ["/"]
