"""deploy/server.Containerfile and deploy/pilot.Containerfile: hadolint (every finding fails, with
deploy/.hadolint.yaml), plus the rules hadolint does not know: multi-stage, pinned base images,
a non-root final user, hash-checked pip installs, and what each image contains."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harvester.plugins.base import WorkerSpec
from harvester.plugins.kubernetes import job_manifest
from tests.deploy.conftest import DEPLOY, ROOT, planted, run

SERVER = DEPLOY / "server.Containerfile"
PILOT = DEPLOY / "pilot.Containerfile"
HADOLINT_CONFIG = DEPLOY / ".hadolint.yaml"


def hadolint(tools: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return run([tools / "hadolint", "--no-color", "--config", HADOLINT_CONFIG, path])


# --- the rules of this project, on the instruction list ------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


PINNED_IMAGE = re.compile(r"^[\w.\-/]+(:\d+\.\d+\.\d+[\w.\-]*)?(@sha256:[0-9a-f]{64})?$")


def containerfile_problems(text: str) -> list[str]:
    problems = []
    steps = instructions(text)
    froms = [args.split()[0] for keyword, args in steps if keyword == "FROM"]
    stage_names = {
        args.split()[-1] for keyword, args in steps if keyword == "FROM" and " AS " in args.upper()
    }
    if len(froms) < 2:
        problems.append("not multi-stage")
    for image in froms:
        if image in stage_names:
            continue
        if not PINNED_IMAGE.match(image) or (":" not in image and "@" not in image):
            problems.append(f"base image {image} is not pinned to an exact version or digest")
    final_stage = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    users = [args for keyword, args in final_stage if keyword == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the final stage runs as root")
    for keyword, args in steps:
        if keyword == "RUN":
            for command in re.split(r"&&|;", args):
                if (
                    re.search(r"\bpip install\b", command)
                    and " -r " in command
                    and "--require-hashes" not in command
                ):
                    problems.append(f"pip install without --require-hashes: {command.strip()}")
    return problems


@pytest.mark.parametrize("path", [SERVER, PILOT], ids=["server", "pilot"])
def test_containerfile_passes_hadolint_and_the_project_rules(tools, path):
    result = hadolint(tools, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert containerfile_problems(path.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("FROM python:3.11.14-slim-bookworm AS build", "FROM python:latest AS build", "DL3007"),
        ("USER 10001:10001", "USER root", "DL3002"),
        (
            "WORKDIR /opt/ailuro/app\nCOPY . .",
            "WORKDIR /opt/ailuro/app\nRUN apt-get install -y curl\nCOPY . .",
            "DL3008",
        ),
        (
            '      org.opencontainers.image.licenses="Apache-2.0"',
            '      org.opencontainers.image.licences="Apache-2.0"',
            "DL3049",
        ),
    ],
    ids=["latest-tag", "root-user", "unpinned-apt", "missing-label"],
)
def test_hadolint_fails_on_a_planted_error(tools, tmp_path, old, new, rule):
    result = hadolint(tools, planted(tmp_path, SERVER, old, new))
    assert result.returncode != 0
    assert rule in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("FROM python:3.11.14-slim-bookworm AS build", "FROM python:3.11-slim AS build", "not pinned"),
        ("USER 10001:10001", "USER 0:0", "runs as root"),
        ("USER 10001:10001\n", "", "runs as root"),
        (
            "pip install --require-hashes --only-binary",
            "pip install --only-binary",
            "without --require-hashes",
        ),
    ],
    ids=["floating-tag", "uid-0", "no-user", "no-hashes"],
)
def test_project_rules_fail_on_a_planted_error(tmp_path, old, new, problem):
    problems = containerfile_problems(planted(tmp_path, SERVER, old, new).read_text())
    assert any(problem in p for p in problems), problems


def test_a_single_stage_file_is_refused():
    text = "FROM python:3.11.14-slim-bookworm\nUSER 10001\n"
    assert "not multi-stage" in containerfile_problems(text)


# --- what the images contain --------------------------------------------------------------------


def test_server_image_runs_the_gunicorn_command_of_the_readme():
    readme = (ROOT / "README.md").read_text()
    documented = re.search(r"`(gunicorn config\.wsgi:application [^`]*)`", readme)
    assert documented is not None
    cmd = next(args for keyword, args in instructions(SERVER.read_text()) if keyword == "CMD")
    assert " ".join(re.findall(r'"([^"]*)"', cmd)).startswith(documented.group(1))


def test_pilot_image_holds_only_the_django_free_package():
    copies = [args for keyword, args in instructions(PILOT.read_text()) if keyword == "COPY"]
    sources = {word for args in copies if not args.startswith("--from") for word in args.split()[:-1]}
    assert sources == {"pyproject.toml", "ailuro", "deploy/pilot-requirements.txt"}


def test_pilot_image_name_is_the_kubernetes_plugin_default():
    spec = WorkerSpec(worker_id=1, queue="q", argv=["true"], workdir=Path("work"), env={}, cores=1)
    default_image = job_manifest(spec, {})["spec"]["template"]["spec"]["containers"][0]["image"]
    name = default_image.split(":")[0]
    assert f'org.opencontainers.image.title="{name}"' in PILOT.read_text()
    assert f"-t {default_image}" in PILOT.read_text()  # the documented build command tags it so


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    return pins


def test_pilot_lock_pins_the_server_versions_with_hashes():
    pilot = _pins(DEPLOY / "pilot-requirements.txt")
    server = _pins(ROOT / "requirements.txt")
    for name in ("requests", "rich", "pyyaml"):
        assert pilot[name] == server[name], name
    text = (DEPLOY / "pilot-requirements.txt").read_text()
    for block in re.split(r"\n(?=[A-Za-z])", text.split("\n", 4)[-1]):
        if "==" in block:
            assert "--hash=sha256:" in block, block


def test_build_context_keeps_what_the_server_needs():
    """.dockerignore drops tests, docs and local state, but no package of the server."""
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = {"manage.py", "requirements.txt", "pyproject.toml", "templates", "static", "ailuro", "config"}
    needed |= {p.parent.name for p in ROOT.glob("*/apps.py")}
    assert needed.isdisjoint(ignored), needed & ignored


def test_static_files_collect_into_the_image_folder(tmp_path):
    """The server image's build step: collectstatic into AILURO_STATIC_ROOT with a throwaway key."""
    target = tmp_path / "static"
    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": "collectstatic-only-not-a-secret",
        "AILURO_DATA_DIR": str(tmp_path / "data"),
        "AILURO_STATIC_ROOT": str(target),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / "admin").is_dir()
    assert list(target.rglob("*.css.gz")), "whitenoise compresses at collect time"
