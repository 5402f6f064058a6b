"""Runs inside the released-clients virtualenv (var/clients-venv), not in ailuro's: drives
ctrl_bps_panda's PanDAService as `bps submit` would, on a GenericWorkflow built in Python (no
Butler, no QuantumGraph), against the server named by PANDA_URL.

    python bps_driver.py ping
    python bps_driver.py submit <work dir> <workflow name>
    python bps_driver.py submit_dag <work dir> <workflow name> <fail flag file> [maxRequestLength]
    python bps_driver.py report|status|list|cancel|restart <run id>

Prints one JSON line: {"ping": [status, message]}, {"run_id": N, "with_steps": bool}, or the
verb's result.

`submit_dag` builds a bigger GenericWorkflow: isr ×3 → calibrate ×3 (one each) → coadd (one job
gathering the three calibrates), and a finalJob. Its runner command is a real shell line: the job
`calibrate_903342_11` exits 3 while the flag file exists, every other job exits 0. With a small
maxRequestLength the client sends it in steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FAIL_JOB = "calibrate_903342_11"


def _config(work: Path, name: str, extra: dict[str, Any] | None = None) -> Any:
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
            **(extra or {}),
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


def _dag(name: str) -> Any:
    from lsst.ctrl.bps import GenericWorkflow, GenericWorkflowExec, GenericWorkflowJob

    workflow = GenericWorkflow(name)
    pipetask = GenericWorkflowExec(name="pipetask", src_uri="${CTRL_MPEXEC_DIR}/bin/pipetask")

    def job(job_name: str, label: str, node_id: str) -> Any:
        return GenericWorkflowJob(
            name=job_name,
            label=label,
            executable=pipetask,
            arguments="run-qbb --qgraph-node-id {qgraphNodeId} --qgraph-id {qgraphId}",
            cmdvals={"qgraphNodeId": node_id, "qgraphId": "1700000000.123-4567"},
            request_memory=1024,
            request_cpus=1,
            request_walltime="600",
            number_of_retries=1,
            compute_site="SLAC_Rubin",
        )

    visits = ["10", "11", "12"]
    for visit in visits:
        workflow.add_job(job(f"isr_903342_{visit}", "isr", f"aaaa-{visit}"))
        workflow.add_job(job(f"calibrate_903342_{visit}", "calibrate", f"bbbb-{visit}"))
        workflow.add_job_relationships(f"isr_903342_{visit}", f"calibrate_903342_{visit}")
    workflow.add_job(job("coadd_9813", "coadd", "cccc-9813"))
    for visit in visits:
        workflow.add_job_relationships(f"calibrate_903342_{visit}", "coadd_9813")
    final = GenericWorkflowJob(
        name="finalJob",
        label="finalJob",
        executable=GenericWorkflowExec(name="final_job.bash", src_uri="${CTRL_BPS_DIR}/final_job.bash"),
        arguments="run",
        request_memory=1024,
        number_of_retries=1,
        compute_site="SLAC_Rubin",
    )
    workflow.add_final(final)
    workflow.run_attrs = {"bps_isjob": "True", "bps_run": name, "bps_operator": "alice"}
    return workflow


def _submit(work: Path, config: Any, workflow: Any) -> None:
    from lsst.ctrl.bps.panda import PanDAService

    (work / "submit").mkdir(parents=True, exist_ok=True)
    service = PanDAService(config)
    prepared = service.prepare(config, workflow, out_prefix=str(work / "submit"))
    service.submit(prepared, config=config)
    # True when the client sent the workflow in steps (it was larger than maxRequestLength).
    steps = bool(getattr(prepared.idds_client_workflow.template, "with_steps", False))
    print(json.dumps({"run_id": prepared.run_id, "with_steps": steps}))


def _on_run(verb: str, run_id: str) -> Any:
    from lsst.ctrl.bps.panda import PanDAService

    service = PanDAService(_config(Path("/nonexistent"), "query"))
    if verb == "report":
        reports, message = service.report(wms_workflow_id=run_id, return_exit_codes=True)
        return {
            "message": message,
            "reports": [
                {
                    "wms_id": r.wms_id,
                    "operator": r.operator,
                    "run": r.run,
                    "state": r.state.name,
                    "total_number_jobs": r.total_number_jobs,
                    "job_state_counts": {s.name: n for s, n in r.job_state_counts.items()},
                    "job_summary": {
                        label: {s.name: n for s, n in counts.items()}
                        for label, counts in r.job_summary.items()
                    },
                    "exit_code_summary": r.exit_code_summary,
                }
                for r in reports
            ],
        }
    if verb == "status":
        state, message = service.get_status(wms_workflow_id=run_id)
        return {"state": state.name, "message": message}
    if verb == "list":
        return {"ids": service.list_submitted_jobs(wms_id=run_id)}
    if verb == "cancel":
        return {"cancel": list(service.cancel(run_id))}
    if verb == "restart":
        return {"restart": list(service.restart(run_id))}
    raise SystemExit(f"unknown verb {verb}")


def main() -> None:
    from lsst.ctrl.bps.panda import PanDAService

    command = sys.argv[1]
    if command == "ping":
        service = PanDAService(_config(Path("/nonexistent"), "ping"))
        print(json.dumps({"ping": list(service.ping())}))
        return
    if command in {"report", "status", "list", "cancel", "restart"}:
        print(json.dumps(_on_run(command, sys.argv[2])))
        return
    work, name = Path(sys.argv[2]), sys.argv[3]
    if command == "submit":
        _submit(work, _config(work, name), _workflow(name))
        return
    flag = sys.argv[4]
    extra: dict[str, Any] = {
        # A real shell line: the arguments are the decoder's (hex command, the job's pseudo input
        # name, ...); one job fails while the flag file exists.
        "runnerCommand": (
            f"sh -c 'case \"$*\" in *{FAIL_JOB}+*) test -e {flag} && exit 3;; esac; exit 0' runner _cmd_line_"
        ),
    }
    if len(sys.argv) > 5:
        extra["maxRequestLength"] = int(sys.argv[5])
    _submit(work, _config(work, name, extra), _dag(name))


if __name__ == "__main__":
    main()
