"""The Kubernetes plugin against a small fake API server on 127.0.0.1 (no cluster runs here).

The fake implements only what the plugin calls — create, list and delete Job, list Pod — and
moves Jobs through pending → active → succeeded/failed as the test scripts it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from harvester.plugins import PluginError, WorkerSpec, plugin_for
from harvester.plugins.kubernetes import job_name


class FakeApi:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # method, path, authorization
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def set_status(self, name: str, **status: Any) -> None:
        self.jobs[name]["status"] = status


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, doc: Any) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _record(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            fake.calls.append((self.command, parts.path, self.headers.get("Authorization", "")))
            return parts.path, parse_qs(parts.query)

        def do_POST(self) -> None:  # noqa: N802
            path, _ = self._record()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if path != "/apis/batch/v1/namespaces/pilots/jobs" or body.get("kind") != "Job":
                self._send(404, {"kind": "Status", "message": "not found"})
                return
            name = body["metadata"]["name"]
            if name in fake.jobs:
                self._send(409, {"kind": "Status", "reason": "AlreadyExists"})
                return
            body["status"] = {}
            fake.jobs[name] = body
            self._send(201, body)

        def do_GET(self) -> None:  # noqa: N802
            path, query = self._record()
            selector = query.get("labelSelector", [""])[0]
            if path == "/apis/batch/v1/namespaces/pilots/jobs":
                items = [j for j in fake.jobs.values() if selector == "app=" + j["metadata"]["labels"]["app"]]
                self._send(200, {"kind": "JobList", "items": items})
            elif path == "/api/v1/namespaces/pilots/pods":
                pods = [
                    {
                        "metadata": {"labels": {"job-name": n, "app": "ailuro-pilot"}},
                        "spec": {"nodeName": "node-a"},
                    }
                    for n, j in fake.jobs.items()
                    if j["status"].get("active") or j["status"].get("succeeded")
                ]
                self._send(200, {"kind": "PodList", "items": pods})
            else:
                self._send(404, {"kind": "Status"})

        def do_DELETE(self) -> None:  # noqa: N802
            path, query = self._record()
            name = path.rsplit("/", 1)[-1]
            if name not in fake.jobs:
                self._send(404, {"kind": "Status", "reason": "NotFound"})
                return
            assert query.get("propagationPolicy") == ["Background"]
            del fake.jobs[name]
            self._send(200, {"kind": "Status", "status": "Success"})

        def log_message(self, *args: Any) -> None:
            pass

    fake.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=fake.httpd.serve_forever, daemon=True).start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def spec(tmp_path: Path, worker_id: int = 5) -> WorkerSpec:
    return WorkerSpec(
        worker_id=worker_id,
        queue="CERN_K8S_Queue",
        argv=["python3", "-m", "ailuro.cli", "pilot", "--queue", "CERN_K8S_Queue"],
        workdir=tmp_path,
        cores=2,
        memory_mb=3000,
        walltime_s=7200,
    )


def test_a_pilot_is_submitted_as_a_job_manifest(api: FakeApi, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token\n")
    plugin = plugin_for(
        "kubernetes",
        {"api_url": api.url, "namespace": "pilots", "token_file": str(token_file), "image": "ailuro:1"},
    )
    submitted = plugin.submit(spec(tmp_path))
    assert submitted.batch_id == "ailuro-cern-k8s-queue-5" == job_name("CERN_K8S_Queue", 5)
    manifest = api.jobs[submitted.batch_id]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ailuro:1"
    assert container["command"][-1] == "CERN_K8S_Queue"
    assert container["resources"]["limits"]["memory"] == "3000Mi"
    assert {"name": "AILURO_WORKER_ID", "value": "5"} in container["env"]
    assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["activeDeadlineSeconds"] == 7200
    assert api.calls[0] == ("POST", "/apis/batch/v1/namespaces/pilots/jobs", "Bearer sa-token")


def test_job_states_are_polled_and_mapped(api: FakeApi, tmp_path: Path) -> None:
    plugin = plugin_for("kubernetes", {"api_url": api.url, "namespace": "pilots"})
    ids = [plugin.submit(spec(tmp_path, n)).batch_id for n in (1, 2, 3, 4)]
    api.set_status(ids[1], active=1)
    api.set_status(ids[2], succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    api.set_status(
        ids[3], failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
    )
    states = plugin.poll([*ids, "ailuro-unknown-9"])
    assert states[ids[0]].status == "submitted"
    assert (states[ids[1]].status, states[ids[1]].node) == ("running", "node-a")
    assert (states[ids[2]].status, states[ids[2]].exit_code) == ("finished", 0)
    assert (states[ids[3]].status, states[ids[3]].diag) == ("failed", "DeadlineExceeded")
    assert "ailuro-unknown-9" not in states


def test_cancel_deletes_the_job_and_ignores_gone_ones(api: FakeApi, tmp_path: Path) -> None:
    plugin = plugin_for("kubernetes", {"api_url": api.url, "namespace": "pilots"})
    name = plugin.submit(spec(tmp_path)).batch_id
    plugin.cancel([name, "ailuro-already-gone-1"])
    assert api.jobs == {}
    assert ("DELETE", f"/apis/batch/v1/namespaces/pilots/jobs/{name}", "") in api.calls


def test_api_errors_become_plugin_errors_naming_the_call(api: FakeApi, tmp_path: Path) -> None:
    plugin = plugin_for("kubernetes", {"api_url": api.url, "namespace": "pilots"})
    plugin.submit(spec(tmp_path))
    with pytest.raises(PluginError, match="HTTP 409"):
        plugin.submit(spec(tmp_path))
    with pytest.raises(PluginError, match="api_url"):
        plugin_for("kubernetes", {})
