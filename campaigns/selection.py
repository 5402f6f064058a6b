"""Picking failed jobs for a selective rerun, and error templates: pure functions (docs/contributing.md#shape-of-the-code)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.retry import FAMILY_COLUMNS

_MASKS = (
    (re.compile(r"(?:/[\w.+-]+)+/?"), "<PATH>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{8,}\b"), "<HEX>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<N>"),
)


def error_template(row: Mapping[str, Any]) -> str:
    """`family:code message-template` of a failed job (numbers, hex ids and paths masked); the
    first family with a non-zero code wins, in the order of `dispatcher.retry.FAMILY_COLUMNS`. Empty when no family has one."""
    for family, (code_col, diag_col) in FAMILY_COLUMNS.items():
        code = int(row.get(code_col) or 0)
        if code:
            diag = str(row.get(diag_col) or "") if diag_col else ""
            for pattern, mask in _MASKS:
                diag = pattern.sub(mask, diag)
            return f"{family}:{code} {diag}".strip()
    return ""


@dataclass(frozen=True)
class Selection:
    """Which failed jobs to rerun. Empty fields match everything; all given fields must match.

    `error` matches a template exactly or as a prefix (`exe:137` picks every exe 137 failure).
    `site` matches the queue or its site. `data_min`/`data_max` bound the job's data id (inclusive).
    """

    error: str = ""
    label: str = ""
    site: str = ""
    data_min: Any = None
    data_max: Any = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> Selection:
        raw = dict(raw or {})
        unknown = set(raw) - {"error", "label", "site", "data_min", "data_max"}
        if unknown:
            raise ValueError(f"selection has unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**raw)

    @property
    def empty(self) -> bool:
        return not (self.error or self.label or self.site) and self.data_min is None and self.data_max is None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}

    def matches(self, job: Mapping[str, Any], *, dimension: str) -> bool:
        """`job`: label, queue, site, data_id and the error columns of a failed job."""
        if self.label and job["label"] != self.label:
            return False
        if self.site and self.site not in (job.get("queue"), job.get("site")):
            return False
        if self.error:
            template = error_template(job)
            if not (template == self.error or template.startswith(self.error)):
                return False
        if self.data_min is not None or self.data_max is not None:
            value = (job.get("data_id") or {}).get(dimension)
            if value is None:
                return False
            try:
                if self.data_min is not None and value < self.data_min:
                    return False
                if self.data_max is not None and value > self.data_max:
                    return False
            except TypeError:
                return False
        return True
