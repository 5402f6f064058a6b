"""Safe decoding of what PanDA's clients send to the iDDS relay: bytes in, plain data out.

Upstream panda-server hands the client's `args` to `idds.common.utils.json_loads`, which imports
the module and instantiates the class each `{"class", "module", "attributes"}` object names. Here
nothing named in a payload is ever imported, unpickled or constructed:

1. The body is gzip (recognised by its magic bytes; the clients send no Content-Encoding), JSON
   or a urlencoded form. gzip is inflated with a byte budget: a bomb stops at the budget (413).
2. `args` and `kwargs` are JSON strings inside the envelope, parsed with plain `json.loads` and a
   depth limit (core.parsers), so deep nesting is a 400, never a RecursionError.
3. `walk_plain` visits every object of the tree: an object naming a (module, class) pair outside
   `ALLOWED_CLASSES` is a 400 naming the pair; `"idds_zip:" + base64(zlib(json))` strings are
   inflated against the same budget (413 past it) and walked in turn. What comes out is dicts,
   lists and scalars only.
4. `workflow_decode` reads that tree into the frozen dataclasses below, checking each field's type;
   `pandacompat.translate` works on those alone.

Every size is checked before the memory for it is taken: base64 text against the remaining budget
before decoding, inflated output in bounded chunks.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from core.parsers import JsonInputError, json_loads_guarded

GZIP_MAGIC = b"\x1f\x8b"
IDDS_ZIP_PREFIX = "idds_zip:"
# Inflating in steps of this size bounds what one step allocates beyond the budget.
_INFLATE_STEP = 1 << 20

# The iDDS objects a BPS submission holds (ctrl_bps_panda 30.0.0 with idds-* 2.6.21), by module
# and class. Anything else is refused; none of them is ever imported.
ALLOWED_CLASSES = frozenset(
    {
        ("idds.workflowv2.workflow", "Workflow"),
        ("idds.workflowv2.workflow", "WorkflowBase"),
        ("idds.workflowv2.workflow", "AndCondition"),
        ("idds.workflowv2.workflow", "OrCondition"),
        ("idds.workflowv2.workflow", "ConditionOperator"),
        ("idds.workflowv2.work", "Collection"),
        ("idds.doma.workflowv2.domapandawork", "DomaPanDAWork"),
        ("idds.common.dict_class", "DictMetadata"),
        ("idds.common.constants", "TransformType"),
    }
)
_OBJECT_KEYS = frozenset({"class", "module", "attributes"})
_METHOD_KEYS = frozenset({"idds_method", "idds_method_internal_id"})
_COMMAND = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class DecodeError(ValueError):
    """A request the relay refuses; `status` is the HTTP status (400, or 413 for sizes)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Budget:
    """Bytes that inflating (the gzip body and every idds_zip field) may still produce."""

    remaining: int
    limit: int

    def take(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise DecodeError(
                f"{what} inflates past the relay's limit of {self.limit} decoded bytes "
                "(AILURO_RELAY_MAX_DECODED_BYTES)",
                413,
            )
        self.remaining -= n


def inflate_bounded(data: bytes, *, wbits: int, budget: Budget, what: str) -> bytes:
    """zlib/gzip data inflated in bounded steps; past the budget a 413, without inflating further."""
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    pending = data
    try:
        while True:
            step = min(_INFLATE_STEP, budget.remaining + 1)
            chunk = inflater.decompress(pending, step)
            budget.take(len(chunk), what)
            parts.append(chunk)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not chunk):
                break
    except zlib.error as exc:
        raise DecodeError(f"{what} is not valid compressed data ({exc})") from None
    if not inflater.eof:
        raise DecodeError(f"{what} is truncated compressed data")
    return b"".join(parts)


# --- the envelope ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayCall:
    """One relay request: the command and its arguments as plain data."""

    command: str
    args: list[Any]
    kwargs: dict[str, Any]


def body_decode(raw: bytes, *, budget: Budget) -> dict[str, Any]:
    """The relay envelope from a request body: gzip(JSON), JSON, or a urlencoded form."""
    if raw.startswith(GZIP_MAGIC):
        raw = inflate_bounded(raw, wbits=16 + zlib.MAX_WBITS, budget=budget, what="the gzip body")
    text = raw.lstrip()
    if text.startswith(b"{"):
        try:
            envelope = json_loads_guarded(text, max_depth=4)
        except JsonInputError as exc:
            raise DecodeError(f"the relay body is not acceptable JSON: {exc}") from None
        if not isinstance(envelope, dict):
            raise DecodeError("the relay body must be a JSON object")
        return envelope
    try:
        form = parse_qs(raw.decode("utf-8"), max_num_fields=8, strict_parsing=False)
    except UnicodeDecodeError:
        raise DecodeError("the relay body is neither gzip, JSON nor a UTF-8 form") from None
    except ValueError as exc:  # more fields than max_num_fields
        raise DecodeError(f"the relay form is not acceptable: {exc}") from None
    return {key: values[-1] for key, values in form.items()}


def relay_call_parse(envelope: Mapping[str, Any], *, max_depth: int) -> RelayCall:
    """`{"command_name", "args": "<JSON>", "kwargs": "<JSON>", "manager"}` → RelayCall.

    A `"<command>+<host>"` name (upstream relays to a host the client names) is refused.
    """
    command = envelope.get("command_name")
    if not isinstance(command, str) or not command:
        raise DecodeError("command_name is missing")
    if "+" in command:
        raise DecodeError("command_name names a host (command+host): this server relays to no other host")
    if not _COMMAND.fullmatch(command):
        raise DecodeError(f"command_name {command[:64]!r} is not a command name")
    args = _json_field(envelope.get("args"), "args", max_depth)
    kwargs = _json_field(envelope.get("kwargs"), "kwargs", max_depth)
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, list):
        raise DecodeError("args must be a JSON list")
    if not isinstance(kwargs, dict):
        raise DecodeError("kwargs must be a JSON object")
    return RelayCall(command=command, args=args, kwargs=kwargs)


def _json_field(value: Any, name: str, max_depth: int) -> Any:
    if value is None or isinstance(value, list | dict):
        # A JSON envelope may carry them unquoted; they were parsed with a depth of 4 at most.
        return value
    if not isinstance(value, str):
        raise DecodeError(f"{name} must be a JSON string")
    try:
        return json_loads_guarded(value, max_depth=max_depth)
    except JsonInputError as exc:
        raise DecodeError(f"{name} is not acceptable JSON: {exc}") from None


# --- the object tree ---------------------------------------------------------------------------


def walk_plain(value: Any, *, budget: Budget, max_depth: int) -> Any:
    """The tree with every idds_zip field inflated and parsed, every object checked against
    ALLOWED_CLASSES. Iterative: containers are rewritten in place, no recursion to exhaust."""
    root = [value]
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > max_depth:
            raise DecodeError(f"the workflow nests deeper than {max_depth} levels")
        if isinstance(container, dict):
            if "class" in container or "module" in container:
                _check_object(container)
            elif "idds_method" in container and not container.keys() <= _METHOD_KEYS:
                raise DecodeError("an idds_method reference carries unexpected keys")
            items: Iterable[tuple[Any, Any]] = container.items()
        else:
            items = enumerate(container)
        # Only values are replaced while a dict is iterated (never a key added or removed).
        for key, child in items:
            kind = type(child)
            if kind is str:
                if not child.startswith(IDDS_ZIP_PREFIX):
                    continue
                child = _unzip(child, budget=budget, max_depth=max_depth)
                container[key] = child
                kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
    return root[0]


def _check_object(obj: Mapping[str, Any]) -> None:
    module, cls = obj.get("module"), obj.get("class")
    if not isinstance(module, str) or not isinstance(cls, str) or not obj.keys() <= _OBJECT_KEYS:
        raise DecodeError("an object must be exactly {class, module, attributes} with string names")
    if (module, cls) not in ALLOWED_CLASSES:
        raise DecodeError(f"class {module[:100]}.{cls[:100]} is not an iDDS workflow class this server reads")
    if not isinstance(obj.get("attributes"), dict):
        raise DecodeError(f"{cls}.attributes must be an object")


def _unzip(text: str, *, budget: Budget, max_depth: int) -> Any:
    encoded = text[len(IDDS_ZIP_PREFIX) :]
    # base64 yields 3 bytes per 4 characters: refuse before decoding what cannot fit.
    budget.take(len(encoded) * 3 // 4, "an idds_zip field")
    try:
        packed = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("an idds_zip field is not valid base64") from None
    inflated = inflate_bounded(packed, wbits=zlib.MAX_WBITS, budget=budget, what="an idds_zip field")
    try:
        return json_loads_guarded(inflated, max_depth=max_depth)
    except JsonInputError as exc:
        raise DecodeError(f"an idds_zip field is not acceptable JSON: {exc}") from None


# --- typed view of a BPS workflow --------------------------------------------------------------


@dataclass(frozen=True)
class IddsDependency:
    task: str
    inputname: str


@dataclass(frozen=True)
class IddsJob:
    """One dependency-map entry: a job, named by its pseudo input file."""

    name: str
    dependencies: tuple[IddsDependency, ...] = ()


@dataclass(frozen=True)
class IddsWork:
    """One DomaPanDAWork: a task (one label chunk) of the BPS workflow."""

    internal_id: str
    task_name: str
    executable: str
    # None when the map was sent as a step (`{"idds_dependency_map_file": …}`); see `map_file`.
    jobs: tuple[IddsJob, ...] | None
    map_file: str | None = None
    queue: str | None = None
    site: str | None = None
    cloud: str | None = None
    rss_mb: float | None = None
    rss_max_mb: float | None = None
    rss_retry_step_mb: float | None = None
    rss_retry_offset_mb: float | None = None
    core_count: int | None = None
    max_walltime_s: int | None = None
    max_attempt: int | None = None
    priority: int | None = None
    processing_type: str | None = None
    prod_source_label: str | None = None
    task_type: str | None = None
    vo: str | None = None


@dataclass(frozen=True)
class IddsWorkflow:
    name: str
    works: tuple[IddsWork, ...]
    # internal ids of works that run once the works they wait for have ended (BPS's finalJob).
    final_work_ids: frozenset[str] = frozenset()
    is_step: bool = False
    with_steps: bool = False
    # A step carries its works' dependency maps here, by task name.
    step_maps: Mapping[str, tuple[IddsJob, ...]] = field(default_factory=dict)


def _attributes(obj: Any, cls: str, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("class") != cls:
        raise DecodeError(f"{where} must be an iDDS {cls}")
    attributes: dict[str, Any] = obj["attributes"]
    return attributes


def _get(attrs: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise DecodeError(f"{where}.{key} has the wrong type (boolean)")
    if not isinstance(value, kind):
        raise DecodeError(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def workflow_decode(args: Sequence[Any], *, budget: Budget, max_depth: int) -> IddsWorkflow:
    """The `submit` command's args (`[<Workflow>]`, already parsed JSON) as an IddsWorkflow."""
    if len(args) != 1:
        raise DecodeError("submit takes one argument, the workflow")
    tree = walk_plain(args[0], budget=budget, max_depth=max_depth)
    outer = _attributes(tree, "Workflow", "args[0]")
    template = _attributes(outer.get("template"), "WorkflowBase", "Workflow.template")
    where = "WorkflowBase"
    name = _get(template, "_name", str, where)
    if not name:
        raise DecodeError("the workflow has no name (WorkflowBase._name)")
    works_raw = _get(template, "_works", dict, where) or {}
    works = tuple(_work_decode(internal_id, obj) for internal_id, obj in works_raw.items())
    finals = _final_works(_get(template, "_conditions", dict, where) or {}, set(works_raw))
    is_step = bool(_get(template, "_is_workflow_step", bool, where))
    step_maps: dict[str, tuple[IddsJob, ...]] = {}
    if is_step:
        data = _get(template, "_workflow_data", dict, where) or {}
        for task_name, entries in data.items():
            step_maps[task_name] = _jobs_decode(entries, f"{where}._workflow_data.{task_name}")
    return IddsWorkflow(
        name=name,
        works=works,
        final_work_ids=finals,
        is_step=is_step,
        with_steps=bool(_get(template, "with_steps", bool, where)),
        step_maps=step_maps,
    )


_NUMERIC_TEXT = re.compile(r"\s*[0-9]{1,12}(\.[0-9]{0,6})?\s*")


def _number(attrs: Mapping[str, Any], key: str, where: str) -> float | None:
    """A number, also as text: GenericWorkflowJob declares `request_walltime` a string, and
    ctrl_bps_panda passes it on as it is (`"600"` arrives as maxWalltime)."""
    value = _get(attrs, key, (int, float, str), where)
    if isinstance(value, str):
        if not _NUMERIC_TEXT.fullmatch(value):
            raise DecodeError(f"{where}.{key} must be a number, got {value[:40]!r}")
        return float(value)
    return None if value is None else float(value)


def _integer(attrs: Mapping[str, Any], key: str, where: str) -> int | None:
    value = _number(attrs, key, where)
    return None if value is None else int(value)


def _work_decode(internal_id: str, obj: Any) -> IddsWork:
    where = f"DomaPanDAWork[{internal_id}]"
    attrs = _attributes(obj, "DomaPanDAWork", where)
    task_name = _get(attrs, "task_name", str, where)
    if not task_name:
        raise DecodeError(f"{where} has no task_name")
    executable = _get(attrs, "executable", str, where) or ""
    dependency_map = attrs.get("_dependency_map")
    jobs: tuple[IddsJob, ...] | None
    map_file: str | None = None
    if isinstance(dependency_map, dict) and "idds_dependency_map_file" in dependency_map:
        map_file = dependency_map["idds_dependency_map_file"]
        if not isinstance(map_file, str):
            raise DecodeError(f"{where}._dependency_map.idds_dependency_map_file must be a string")
        jobs = None
    else:
        jobs = _jobs_decode(dependency_map or [], f"{where}._dependency_map")
    return IddsWork(
        internal_id=internal_id,
        task_name=task_name,
        executable=executable,
        jobs=jobs,
        map_file=map_file,
        queue=_get(attrs, "task_queue", str, where) or _get(attrs, "queue", str, where),
        site=_get(attrs, "task_site", str, where),
        cloud=_get(attrs, "task_cloud", str, where),
        rss_mb=_number(attrs, "task_rss", where),
        rss_max_mb=_number(attrs, "task_rss_max", where),
        rss_retry_step_mb=_number(attrs, "task_rss_retry_step", where),
        rss_retry_offset_mb=_number(attrs, "task_rss_retry_offset", where),
        core_count=_integer(attrs, "core_count", where),
        max_walltime_s=_integer(attrs, "maxWalltime", where),
        max_attempt=_integer(attrs, "maxAttempt", where),
        priority=_integer(attrs, "task_priority", where),
        processing_type=_get(attrs, "processingType", str, where),
        prod_source_label=_get(attrs, "prodSourceLabel", str, where),
        task_type=_get(attrs, "task_type", str, where),
        vo=_get(attrs, "vo", str, where),
    )


def _jobs_decode(entries: Any, where: str) -> tuple[IddsJob, ...]:
    if not isinstance(entries, list):
        raise DecodeError(f"{where} must be a list of jobs")
    jobs: list[IddsJob] = []
    for index, entry in enumerate(entries):
        # The common case checked inline (a map holds up to 30,000 entries per work); anything
        # else goes through `_job_decode`, which builds the same job or says what is wrong.
        if type(entry) is dict:
            name = entry.get("name")
            deps_raw = entry.get("dependencies") or []
            if type(name) is str and name and type(deps_raw) is list:
                deps: list[IddsDependency] = []
                for dep in deps_raw:
                    if type(dep) is not dict:
                        break
                    task, inputname = dep.get("task"), dep.get("inputname")
                    if type(task) is not str or type(inputname) is not str:
                        break
                    deps.append(IddsDependency(task=task, inputname=inputname))
                else:
                    jobs.append(IddsJob(name=name, dependencies=tuple(deps)))
                    continue
        jobs.append(_job_decode(entry, f"{where}[{index}]"))
    return tuple(jobs)


def _job_decode(entry: Any, at: str) -> IddsJob:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise DecodeError(f"{at} must be a job with a name")
    deps_raw = entry.get("dependencies") or []
    if not isinstance(deps_raw, list):
        raise DecodeError(f"{at}.dependencies must be a list")
    deps: list[IddsDependency] = []
    for d_index, dep in enumerate(deps_raw):
        if (
            not isinstance(dep, dict)
            or not isinstance(dep.get("task"), str)
            or not isinstance(dep.get("inputname"), str)
        ):
            raise DecodeError(f"{at}.dependencies[{d_index}] must name a task and an inputname")
        deps.append(IddsDependency(task=dep["task"], inputname=dep["inputname"]))
    return IddsJob(name=entry["name"], dependencies=tuple(deps))


def _final_works(conditions: Mapping[str, Any], work_ids: set[str]) -> frozenset[str]:
    """Works triggered when other works have terminated: BPS's finalJob (AndCondition over
    `is_terminated`). Other condition shapes are not something ailuro can run: refused."""
    finals: set[str] = set()
    for cond_id, obj in conditions.items():
        where = f"WorkflowBase._conditions[{cond_id}]"
        if not isinstance(obj, dict) or obj.get("class") not in {"AndCondition", "OrCondition"}:
            raise DecodeError(f"{where} must be an AndCondition or OrCondition")
        attrs: dict[str, Any] = obj["attributes"]
        for method in attrs.get("_conditions") or []:
            if not isinstance(method, dict) or method.get("idds_method") != "is_terminated":
                raise DecodeError(f"{where}: only conditions on is_terminated (BPS's finalJob) are supported")
        if attrs.get("_false_works"):
            raise DecodeError(f"{where}: conditions with false works are not supported")
        true_works = attrs.get("_true_works") or []
        if not isinstance(true_works, list) or not all(w in work_ids for w in true_works):
            raise DecodeError(f"{where}._true_works must name works of this workflow")
        finals.update(true_works)
    return frozenset(finals)
