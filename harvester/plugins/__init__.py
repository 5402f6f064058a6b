"""Batch-system plugins of the provisioner, behind one interface (`base.Plugin`).

`local` runs pilots as subprocesses (the embedded default), `slurm` submits them with sbatch,
`kubernetes` creates Jobs through the API server. `plugin_for(queue.plugin, queue.plugin_params)`
picks one; the provisioner never calls a batch system directly.
"""

from __future__ import annotations

from typing import Any

from harvester.plugins.base import BatchState, Plugin, PluginError, Submitted, WorkerSpec

__all__ = ["PLUGINS", "BatchState", "Plugin", "PluginError", "Submitted", "WorkerSpec", "plugin_for"]

PLUGINS = ("local", "slurm", "kubernetes")


def plugin_for(name: str, params: dict[str, Any] | None = None) -> Plugin:
    params = dict(params or {})
    if name == "local":
        from harvester.plugins.local import LocalPlugin

        return LocalPlugin(params)
    if name == "slurm":
        from harvester.plugins.slurm import SlurmPlugin

        return SlurmPlugin(params)
    if name == "kubernetes":
        from harvester.plugins.kubernetes import KubernetesPlugin

        return KubernetesPlugin(params)
    raise PluginError(f"unknown harvester plugin {name!r}; choose one of {', '.join(PLUGINS)}")
