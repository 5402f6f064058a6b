"""Wire constants shared by the server and the pilot (no Django here)."""

from __future__ import annotations

# Pilot error codes, as PanDA's pilot3 (pilot/common/errorcodes.py) numbers them.
PILOT_ERROR_KILLED_BY_SERVER = 1144
PILOT_ERROR_MEMORY = 1212
PILOT_ERROR_WALLTIME = 1213
PILOT_ERROR_PREEMPTED = 1379

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
V1_PILOT_PREFIX = "/api/v1/pilot/"
