"""Runs inside the released-clients virtualenv (var/clients-venv), not in ailuro's: drives
ctrl_bps_panda's PanDAService as `bps submit` would, on a GenericWorkflow built in Python (no
Butler, no QuantumGraph), against the server named by PANDA_URL.

    python bps_driver.py ping
    python bps_driver.py submit <work dir> <workflow name>

Prints one JSON line: {"ping": [status, message]} or {"run_id": N}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _config(work: Path, name: str) -> Any:
    from lsst.ctrl.bps import BpsConfig

    return BpsConfig(
        {
            "wmsServiceClass": "lsst.ctrl.bps.panda.PanDAService",
            "computeSite": "SLAC_Rubin",
            "computeCloud": "US",
            "submitPath": str(work / "submit"),
            "fileDistributionEndPoint": f"file://{work}/dist/",
            "fileDistributionEndPointDefault": f"file://{work}/dist/",
            "runnerCommand": "echo _cmd_line_",
            "uniqProcName": name,
            "bps_defined": {"uniqProcName": name},
            "finalJob": {"processingType": "Rubin_Merge"},
        },
        search_order=[],
    )


def _workflow(name: str) -> Any:
    from lsst.ctrl.bps import GenericWorkflow, GenericWorkflowExec, GenericWorkflowJob

    workflow = GenericWorkflow(name)
    pipetask = GenericWorkflowExec(name="pipetask", src_uri="${CTRL_MPEXEC_DIR}/bin/pipetask")
    specs = [
        ("isr_903342_10", "isr", "aaaa-1111", 2048, 1),
        ("isr_903342_11", "isr", "aaaa-2222", 2048, 1),
        ("calibrate_903342_10", "calibrate", "bbbb-3333", 4096, 2),
    ]
    for job_name, label, node_id, memory, cores in specs:
        job = GenericWorkflowJob(
            name=job_name,
            label=label,
            executable=pipetask,
            arguments="run-qbb --qgraph-node-id {qgraphNodeId} --qgraph-id {qgraphId}",
            cmdvals={"qgraphNodeId": node_id, "qgraphId": "1700000000.123-4567"},
            request_memory=memory,
            request_memory_max=4 * memory,
            memory_multiplier=2.0,
            request_cpus=cores,
            request_walltime="600",
            number_of_retries=3,
            compute_site="SLAC_Rubin",
        )
        workflow.add_job(job)
    workflow.add_job_relationships("isr_903342_10", "calibrate_903342_10")
    final = GenericWorkflowJob(
        name="finalJob",
        label="finalJob",
        executable=GenericWorkflowExec(name="final_job.bash", src_uri="${CTRL_BPS_DIR}/final_job.bash"),
        arguments="run",
        request_memory=1024,
        compute_site="SLAC_Rubin",
    )
    workflow.add_final(final)
    workflow.run_attrs = {"bps_isjob": "True", "bps_run": name, "bps_operator": "alice"}
    return workflow


def main() -> None:
    from lsst.ctrl.bps.panda import PanDAService

    command = sys.argv[1]
    if command == "ping":
        service = PanDAService(_config(Path("/nonexistent"), "ping"))
        print(json.dumps({"ping": list(service.ping())}))
        return
    work, name = Path(sys.argv[2]), sys.argv[3]
    config = _config(work, name)
    (work / "submit").mkdir(parents=True, exist_ok=True)
    service = PanDAService(config)
    prepared = service.prepare(config, _workflow(name), out_prefix=str(work / "submit"))
    service.submit(prepared, config=config)
    print(json.dumps({"run_id": prepared.run_id}))


if __name__ == "__main__":
    main()
