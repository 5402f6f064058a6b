"""Wire constants shared by the server and the pilot (no Django here)."""

from __future__ import annotations

# Pilot error codes, as PanDA's pilot3 (pilot/common/errorcodes.py) numbers them.
PILOT_ERROR_KILLED_BY_SERVER = 1144
PILOT_ERROR_MEMORY = 1212
PILOT_ERROR_WALLTIME = 1213
PILOT_ERROR_PREEMPTED = 1379
# A signal ended the payload (1200-1208: the server's `killed-by-signal` rule retries them).
PILOT_ERROR_KILL_SIGNAL = 1200  # any signal without a code of its own
PILOT_ERROR_SIGTERM = 1201
PILOT_ERROR_SIGQUIT = 1202
PILOT_ERROR_SIGXCPU = 1204
PILOT_ERROR_SIGBUS = 1206
PILOT_ERROR_SIGUSR1 = 1207
PILOT_ERROR_SIGINT = 1208
# The payload itself crashed with SIGSEGV (pilot3's PAYLOADSIGSEGV; 1203 is the pilot's own SIGSEGV).
PILOT_ERROR_PAYLOAD_SIGSEGV = 1328

# jobDispatcherErrorCode values written by the watcher.
DISPATCHER_LOST_HEARTBEAT = 100
DISPATCHER_SENT_NO_REPLY = 102
DISPATCHER_HOLDING_TIMEOUT = 103

# Legacy getJob status codes (pandaserver/jobdispatcher/Protocol.py).
STATUS_OK = 0
STATUS_TIMEOUT = 10
STATUS_NO_JOBS = 20
STATUS_FAILED = 30
STATUS_INVALID_TOKEN = 50
STATUS_NO_ROLE = 60
STATUS_PERMISSION_DENIED = 70
STATUS_KEY_MISSING = 80

COMMAND_KILL = "tobekilled"

# The final states of jobs and workflows, as the server names them (dispatcher/states.py: JOB_FINAL,
# WORKFLOW_FINAL; tests/ailuro/test_cli.py checks they agree): clients stop waiting on these.
FINAL_JOB_STATES = frozenset({"finished", "failed", "cancelled", "closed", "pruned"})
FINAL_WORKFLOW_STATES = frozenset({"done", "finished", "failed", "cancelled"})

# How long `ailuro pilot` keeps retrying while the server is unavailable, and keeps its undelivered
# final reports before exiting: longer than the server's AILURO_HEARTBEAT_TIMEOUT default (7200 s),
# so a report outlives the attempt's heartbeat timeout.
PILOT_RETRY_HORIZON_S = 3 * 3600.0
V1_PILOT_PREFIX = "/api/v1/pilot/"
