"""panda-client's JobSpec on the wire, both ways. Pure: plain data in and out, no ORM.

`Client.submitJobs` sends `{"jobs": "<JSON string>"}`: a list of job states, each the 126
attributes of `JobSpec._attributes` by position ("NULL" for unset) followed by one list of file
states (the 18 attributes of `FileSpec._attributes` and the owner, null). `jobs_decode` reads them
by position into dicts, bounded in count and size, and names the first bad record;
`jobs_to_spec` makes ailuro's explicit workflow spec of them. `Client.getJobStatus` reads the other
way: dicts keyed by attribute names plus `Files` (`MiscUtils.load_jobs`), built by
`job_description` from a job row.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pandacompat.rungen import RunGenRefused, rungen_parse, runner_command

# JobSpec._attributes of panda-client 2.2.0 (and PanDA's server), in wire order.
JOB_ATTRIBUTES: tuple[str, ...] = (
    "PandaID", "jobDefinitionID", "schedulerID", "pilotID", "creationTime", "creationHost",
    "modificationTime", "modificationHost", "AtlasRelease", "transformation", "homepackage",
    "prodSeriesLabel", "prodSourceLabel", "prodUserID", "assignedPriority", "currentPriority",
    "attemptNr", "maxAttempt", "jobStatus", "jobName", "maxCpuCount", "maxCpuUnit", "maxDiskCount",
    "maxDiskUnit", "ipConnectivity", "minRamCount", "minRamUnit", "startTime", "endTime",
    "cpuConsumptionTime", "cpuConsumptionUnit", "commandToPilot", "transExitCode", "pilotErrorCode",
    "pilotErrorDiag", "exeErrorCode", "exeErrorDiag", "supErrorCode", "supErrorDiag", "ddmErrorCode",
    "ddmErrorDiag", "brokerageErrorCode", "brokerageErrorDiag", "jobDispatcherErrorCode",
    "jobDispatcherErrorDiag", "taskBufferErrorCode", "taskBufferErrorDiag", "computingSite",
    "computingElement", "jobParameters", "metadata", "prodDBlock", "dispatchDBlock",
    "destinationDBlock", "destinationSE", "nEvents", "grid", "cloud", "cpuConversion", "sourceSite",
    "destinationSite", "transferType", "taskID", "cmtConfig", "stateChangeTime", "prodDBUpdateTime",
    "lockedby", "relocationFlag", "jobExecutionID", "VO", "pilotTiming", "workingGroup",
    "processingType", "prodUserName", "nInputFiles", "countryGroup", "batchID", "parentID",
    "specialHandling", "jobsetID", "coreCount", "nInputDataFiles", "inputFileType", "inputFileProject",
    "inputFileBytes", "nOutputDataFiles", "outputFileBytes", "jobMetrics", "workQueue_ID", "jediTaskID",
    "jobSubStatus", "actualCoreCount", "reqID", "maxRSS", "maxVMEM", "maxSWAP", "maxPSS", "avgRSS",
    "avgVMEM", "avgSWAP", "avgPSS", "maxWalltime", "nucleus", "eventService", "failedAttempt",
    "hs06sec", "gshare", "hs06", "totRCHAR", "totWCHAR", "totRBYTES", "totWBYTES", "rateRCHAR",
    "rateWCHAR", "rateRBYTES", "rateWBYTES", "resource_type", "diskIO", "memory_leak", "memory_leak_x2",
    "container_name", "job_label", "gco2_regional", "gco2_global", "cpu_architecture_level",
    "outputFileType",
)  # fmt: skip
FILE_ATTRIBUTES: tuple[str, ...] = (
    "rowID", "PandaID", "GUID", "lfn", "type", "dataset", "status", "prodDBlock", "prodDBlockToken",
    "dispatchDBlock", "dispatchDBlockToken", "destinationDBlock", "destinationDBlockToken",
    "destinationSE", "fsize", "md5sum", "checksum", "scope",
)  # fmt: skip
NULL = "NULL"
MAX_JOBS_PER_CALL = 1000
MAX_FILES_PER_JOB = 200
MAX_TEXT_CHARS = 64 * 1024  # one attribute's text (jobParameters is the long one)
MAX_INT = 2**31 - 1  # the database's integer columns
# Transformations this server runs by reading their arguments (prun's runGen).
_RUNGEN = re.compile(r"(^|/)runGen(-[0-9-]+)?(\.py)?$")
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class JobSpecInvalid(ValueError):
    """A job record that cannot be accepted; `field` names the position and attribute."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _scalar_ok(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= MAX_TEXT_CHARS
    # panda-client's NonJsonObjectEncoder writes datetimes as {"_datetime_object": "..."}.
    return (
        isinstance(value, dict)
        and set(value) == {"_datetime_object"}
        and isinstance(value["_datetime_object"], str)
    )


def jobs_decode(states: Any) -> list[dict[str, Any]]:
    """Positional job states → dicts keyed by attribute name (unset values left out), each with
    `Files`, a list of file dicts. Raises JobSpecInvalid naming `jobs[i]` and the attribute."""
    if not isinstance(states, list):
        raise JobSpecInvalid("jobs must be a JSON list of job states", "jobs")
    if not states:
        raise JobSpecInvalid("jobs is empty", "jobs")
    if len(states) > MAX_JOBS_PER_CALL:
        raise JobSpecInvalid(f"{len(states)} jobs in one call; the limit is {MAX_JOBS_PER_CALL}", "jobs")
    return [_job_decode(i, state) for i, state in enumerate(states)]


def _job_decode(index: int, state: Any) -> dict[str, Any]:
    where = f"jobs[{index}]"
    if not isinstance(state, list) or len(state) != len(JOB_ATTRIBUTES) + 1:
        raise JobSpecInvalid(
            f"{where} must be a list of {len(JOB_ATTRIBUTES)} JobSpec attributes and a list of files", where
        )
    record: dict[str, Any] = {}
    for position, (name, value) in enumerate(zip(JOB_ATTRIBUTES, state, strict=False)):
        if not _scalar_ok(value):
            raise JobSpecInvalid(
                f"{where}[{position}] ({name}) must be a string, number or null of at most "
                f"{MAX_TEXT_CHARS} characters",
                f"{where}.{name}",
            )
        if value is not None and value != NULL:
            record[name] = value
    files = state[-1]
    if not isinstance(files, list) or len(files) > MAX_FILES_PER_JOB:
        raise JobSpecInvalid(
            f"{where}: the files must be a list of at most {MAX_FILES_PER_JOB}", f"{where}.Files"
        )
    record["Files"] = [_file_decode(f"{where}.Files[{k}]", f) for k, f in enumerate(files)]
    return record


def _file_decode(where: str, state: Any) -> dict[str, Any]:
    if not isinstance(state, list) or len(state) not in (len(FILE_ATTRIBUTES), len(FILE_ATTRIBUTES) + 1):
        raise JobSpecInvalid(f"{where} must be a list of {len(FILE_ATTRIBUTES)} FileSpec attributes", where)
    out: dict[str, Any] = {}
    for name, value in zip(FILE_ATTRIBUTES, state, strict=False):
        if not _scalar_ok(value):
            raise JobSpecInvalid(f"{where}.{name} must be a string, number or null", f"{where}.{name}")
        if value is not None and value != NULL:
            out[name] = value
    return out


def _int_of(record: Mapping[str, Any], name: str, where: str) -> int | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise JobSpecInvalid(f"{where}.{name} must be an integer, got {value!r}", f"{where}.{name}")
    try:
        number = int(float(value))
    except (ValueError, OverflowError):
        raise JobSpecInvalid(f"{where}.{name} must be an integer, got {value!r}", f"{where}.{name}") from None
    if not -MAX_INT <= number <= MAX_INT:
        raise JobSpecInvalid(f"{where}.{name} is out of range (|value| ≤ {MAX_INT})", f"{where}.{name}")
    return number


def _text_of(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name)
    return value if isinstance(value, str) else ""


def job_command(record: Mapping[str, Any], where: str, *, source_url: str) -> str:
    """The shell command of a job: runGen arguments are read (`pandacompat.rungen`), a plain
    transformation is run with its parameters; a transformation fetched from a URL is refused."""
    transformation = _text_of(record, "transformation").strip()
    parameters = _text_of(record, "jobParameters").replace("${SURL}", source_url)
    if not transformation or _RUNGEN.search(transformation):
        try:
            return runner_command(rungen_parse(parameters), source_url=source_url)
        except RunGenRefused as exc:
            raise JobSpecInvalid(f"{where}.jobParameters: {exc}", f"{where}.jobParameters") from None
    if "://" in transformation:
        raise JobSpecInvalid(
            f"{where}.transformation {transformation[:80]!r}: only runGen or a command on the worker "
            "can run here; transformations are not downloaded",
            f"{where}.transformation",
        )
    return f"{transformation} {parameters}".strip()


def _label_of(record: Mapping[str, Any]) -> str:
    site = _text_of(record, "computingSite")
    return (_LABEL_CHARS.sub("_", site)[:100] if site else "") or "jobs"


def jobs_to_spec(records: Sequence[Mapping[str, Any]], *, name: str, source_url: str) -> dict[str, Any]:
    """ailuro's explicit spec of decoded jobs: independent jobs, one label per computingSite
    (the site becomes the label's `sites.include`, the largest maxAttempt its `max_attempts`);
    memory from minRamCount (per core when minRamUnit says so), cores from coreCount, walltime
    from maxWalltime, disk from maxDiskCount, priority from currentPriority (else
    assignedPriority). A job without jobName is named `job<i>`."""
    labels: dict[str, dict[str, Any]] = {}
    jobs: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        where = f"jobs[{index}]"
        label = _label_of(record)
        settings = labels.setdefault(label, {})
        site = _text_of(record, "computingSite")
        if site:
            settings["sites"] = {"include": [site]}
        attempts = _int_of(record, "maxAttempt", where)
        if attempts is not None and attempts > 0:
            settings["max_attempts"] = max(attempts, settings.get("max_attempts", 0))
        job_name = _text_of(record, "jobName") or f"job{index}"
        entry: dict[str, Any] = {
            "name": job_name,
            "label": label,
            "command": job_command(record, where, source_url=source_url),
        }
        resources = _resources(record, where)
        if resources:
            entry["resources"] = resources
        files = [_file_entry(f, f"{where}.Files[{k}]") for k, f in enumerate(record.get("Files", ()))]
        if files:
            entry["files"] = files
        priority = _int_of(record, "currentPriority", where) or _int_of(record, "assignedPriority", where)
        if priority:
            entry["priority"] = priority
        jobs.append(entry)
    spec: dict[str, Any] = {"name": name, "jobs": jobs}
    settings_given = {label: s for label, s in labels.items() if s}
    if settings_given:
        spec["labels"] = settings_given
    return spec


# FileSpec attribute → (ailuro file key, the database column's length).
_FILE_FIELDS = (
    ("lfn", "lfn", 400),
    ("dataset", "dataset", 300),
    ("scope", "scope", 100),
    ("GUID", "guid", 64),
)


def _file_entry(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An output or log FileSpec as a spec file (kept on the job, shown by getJobStatus; nothing is
    staged out). Input files need Rucio and are refused."""
    kind = spec.get("type")
    if kind not in ("output", "log"):
        raise JobSpecInvalid(
            f"{where}.type {kind!r}: only output and log files are accepted (input files need Rucio, "
            "which this server does not support)",
            f"{where}.type",
        )
    entry: dict[str, Any] = {"role": kind}
    for source, key, length in _FILE_FIELDS:
        value = spec.get(source)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > length:
            raise JobSpecInvalid(
                f"{where}.{source} must be a string of 1 to {length} characters", f"{where}.{source}"
            )
        entry[key] = value
    if "lfn" not in entry:
        raise JobSpecInvalid(f"{where}.lfn is missing", f"{where}.lfn")
    return entry


def _resources(record: Mapping[str, Any], where: str) -> dict[str, int]:
    cores = _int_of(record, "coreCount", where)
    memory = _int_of(record, "minRamCount", where)
    if memory and "PerCore" in _text_of(record, "minRamUnit") and cores and cores > 0:
        memory *= cores
    out: dict[str, int] = {}
    for key, value in (
        ("cores", cores),
        ("memory_mb", memory),
        ("walltime_s", _int_of(record, "maxWalltime", where)),
        ("disk_mb", _int_of(record, "maxDiskCount", where)),
    ):
        if value is not None and value > 0:
            out[key] = value
    return out


# --- job rows → what getJobStatus reads -------------------------------------------------------


def wire_datetime(value: dt.datetime | None) -> Any:
    """A datetime as panda-client's JSON hook reads it (`{"__datetime__": iso}`), naive UTC as
    PanDA's are."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return {"__datetime__": value.isoformat()}


def job_description(job: Mapping[str, Any], files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A job row (`pandacompat.queries.client.jobs_described`) keyed by JobSpec attribute names."""
    out: dict[str, Any] = {
        "PandaID": job["pandaid"],
        "jobDefinitionID": job["workflow_id"],
        "jobsetID": job["workflow_id"],
        "reqID": job["task_id"],
        "jediTaskID": job["task_id"],
        "taskID": job["task_id"],
        "jobName": job["name"],
        "jobStatus": job["jobstatus"],
        "prodSourceLabel": job["prodsourcelabel"],
        "prodUserName": job["produsername"],
        "prodUserID": job["produsername"],
        "attemptNr": job["attemptnr"],
        "maxAttempt": job["max_attempts"],
        "currentPriority": job["currentpriority"],
        "assignedPriority": job["currentpriority"],
        "computingSite": job["queue_id"] or NULL,
        "modificationHost": job["node"] or NULL,
        "batchID": job["batch_id"] or NULL,
        "transformation": job["transformation"],
        "jobParameters": job["command"],
        "container_name": job["container_image"] or NULL,
        "job_label": job["label"],
        "resource_type": job["resource_type"] or NULL,
        "coreCount": job["request_cores"],
        "actualCoreCount": job["actual_cores"],
        "minRamCount": job["request_memory_mb"],
        "minRamUnit": "MB",
        "maxDiskCount": job["request_disk_mb"],
        "maxDiskUnit": "MB",
        "maxWalltime": job["request_walltime_s"],
        "cpuConsumptionTime": int(job["cpu_time_s"] or 0),
        "cpuConsumptionUnit": "s",
        "maxRSS": job["max_rss_kb"],
        "maxPSS": job["max_pss_kb"],
        "transExitCode": job["transexitcode"],
        "pilotErrorCode": job["piloterrorcode"],
        "pilotErrorDiag": job["piloterrordiag"] or NULL,
        "exeErrorCode": job["exeerrorcode"],
        "exeErrorDiag": job["exeerrordiag"] or NULL,
        "supErrorCode": job["superrorcode"],
        "supErrorDiag": job["superrordiag"] or NULL,
        "ddmErrorCode": job["ddmerrorcode"],
        "ddmErrorDiag": job["ddmerrordiag"] or NULL,
        "brokerageErrorCode": job["brokerageerrorcode"],
        "brokerageErrorDiag": job["brokerageerrordiag"] or NULL,
        "jobDispatcherErrorCode": job["jobdispatchererrorcode"],
        "jobDispatcherErrorDiag": job["jobdispatchererrordiag"] or NULL,
        "taskBufferErrorCode": job["taskbuffererrorcode"],
        "taskBufferErrorDiag": job["taskbuffererrordiag"] or NULL,
        "creationTime": wire_datetime(job["creationtime"]),
        "modificationTime": wire_datetime(job["heartbeat_at"] or job["statechangetime"]),
        "stateChangeTime": wire_datetime(job["statechangetime"]),
        "startTime": wire_datetime(job["starttime"]),
        "endTime": wire_datetime(job["endtime"]),
    }
    out["Files"] = [
        {
            "PandaID": job["pandaid"],
            "rowID": f["id"],
            "lfn": f["lfn"],
            "type": f["role"],
            "dataset": f["dataset"] or NULL,
            "scope": f["scope"] or NULL,
            "GUID": f["guid"] or NULL,
            "fsize": f["size"],
            "checksum": f["checksum"] or NULL,
            "status": f["status"],
        }
        for f in files
    ]
    return out
