"""Pilots as Kubernetes Jobs, created, listed and deleted through the API server's REST API.

Only the three calls the provisioner needs are used (create Job, list Jobs and Pods by label,
delete Job), over plain HTTPS with a bearer token, so no client library is pinned to a cluster
version. Queue plugin_params: `api_url`, `namespace` (default "default"), `token` or `token_file`
(a service account token), `image` (the pilot image, which has ailuro installed), `ca_file`,
optional `service_account`, `node_selector`.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harvester.plugins.base import BatchState, PluginError, Submitted, WorkerSpec

LABEL_APP = "ailuro-pilot"


def job_name(queue: str, worker_id: int) -> str:
    """A DNS-1123 name: lower case, digits and '-', at most 63 characters."""
    slug = re.sub(r"[^a-z0-9-]+", "-", queue.lower()).strip("-")[:40] or "queue"
    return f"ailuro-{slug}-{worker_id}"


def job_manifest(spec: WorkerSpec, params: dict[str, Any]) -> dict[str, Any]:
    name = job_name(spec.queue, spec.worker_id)
    labels = {"app": LABEL_APP, "ailuro-worker": str(spec.worker_id)}
    resources: dict[str, dict[str, str]] = {"requests": {"cpu": str(spec.cores)}, "limits": {}}
    if spec.memory_mb:
        resources["requests"]["memory"] = f"{spec.memory_mb}Mi"
        resources["limits"]["memory"] = f"{spec.memory_mb}Mi"
    container = {
        "name": "pilot",
        "image": params.get("image", "ailuro-pilot:latest"),
        "command": spec.argv,
        "env": [
            {"name": k, "value": v}
            for k, v in sorted({**spec.env, "AILURO_WORKER_ID": str(spec.worker_id)}.items())
        ],
        "resources": resources,
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if params.get("service_account"):
        pod_spec["serviceAccountName"] = params["service_account"]
    if params.get("node_selector"):
        pod_spec["nodeSelector"] = params["node_selector"]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # a failed pilot is a failed worker; the provisioner submits another
        "ttlSecondsAfterFinished": int(params.get("ttl_s", 3600)),
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if spec.walltime_s:
        job_spec["activeDeadlineSeconds"] = spec.walltime_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": job_spec,
    }


def job_state(job: dict[str, Any]) -> BatchState:
    """Job status → worker state: succeeded → finished, failed or a Failed condition → failed,
    active → running, otherwise submitted (pending pods)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return BatchState(status="failed", exit_code=1, diag=str(condition.get("reason") or "Failed"))
        if condition.get("status") == "True" and condition.get("type") == "Complete":
            return BatchState(status="finished", exit_code=0)
    if status.get("succeeded"):
        return BatchState(status="finished", exit_code=0)
    if status.get("failed"):
        return BatchState(status="failed", exit_code=1, diag="pod failed")
    if status.get("active"):
        return BatchState(status="running")
    return BatchState(status="submitted")


class KubernetesPlugin:
    name = "kubernetes"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.base = str(params.get("api_url", "")).rstrip("/")
        if not self.base:
            raise PluginError("kubernetes plugin needs plugin_params.api_url")
        self.namespace = str(params.get("namespace", "default"))
        token = params.get("token")
        if not token and params.get("token_file"):
            token = Path(params["token_file"]).read_text().strip()
        self.token = token
        self.context = (
            ssl.create_default_context(cafile=params.get("ca_file"))
            if self.base.startswith("https")
            else None
        )
        self.timeout_s = float(params.get("timeout_s", 30))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310  (URL from the queue's admin-set api_url)
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as reply:  # noqa: S310
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise PluginError(f"kubernetes {method} {path}: HTTP {exc.code} {detail}") from exc
        except (OSError, ValueError) as exc:
            raise PluginError(f"kubernetes {method} {path}: {exc}") from exc

    def _jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{urllib.parse.quote(self.namespace)}/jobs"

    def submit(self, spec: WorkerSpec) -> Submitted:
        manifest = job_manifest(spec, self.params)
        created = self._call("POST", self._jobs_path(), manifest)
        return Submitted(
            batch_id=str(created.get("metadata", {}).get("name") or manifest["metadata"]["name"])
        )

    def poll(self, batch_ids: Iterable[str]) -> dict[str, BatchState]:
        wanted = set(batch_ids)
        if not wanted:
            return {}
        selector = urllib.parse.urlencode({"labelSelector": f"app={LABEL_APP}"})
        jobs = self._call("GET", f"{self._jobs_path()}?{selector}")
        pods = self._call("GET", f"/api/v1/namespaces/{urllib.parse.quote(self.namespace)}/pods?{selector}")
        nodes = {
            (pod.get("metadata", {}).get("labels") or {}).get("job-name", ""): pod.get("spec", {}).get(
                "nodeName", ""
            )
            for pod in pods.get("items", [])
        }
        states = {}
        for job in jobs.get("items", []):
            name = job.get("metadata", {}).get("name", "")
            if name in wanted:
                state = job_state(job)
                states[name] = BatchState(state.status, state.exit_code, nodes.get(name) or "", state.diag)
        return states

    def cancel(self, batch_ids: Iterable[str]) -> None:
        for name in batch_ids:
            try:
                self._call(
                    "DELETE", f"{self._jobs_path()}/{urllib.parse.quote(name)}?propagationPolicy=Background"
                )
            except PluginError:
                continue  # already gone
